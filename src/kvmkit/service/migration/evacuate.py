"""Emptying a host (``kvmkit host evacuate NAME``): maintenance on first (placement gives it nothing new), then
every VM moves — running and paused ones live, shut-off ones offline — to the host placement picks for it.
When the pre-checks refuse the best host, the next one that fits is tried; a VM no host takes is listed
with every host's reason. One VM moves at a time (two TCG migrations at once only share the same CPUs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import libvirt

from kvmkit.errors import InvalidInput, KvmkitError
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.spec.migration import EvacuateSpec, MigrateSpec

Hold = Callable[[str], contextlib.AbstractContextManager[Any]]


@contextlib.contextmanager
def _no_hold(_target: str) -> Iterator[None]:
    yield


def _ordered(candidates: list[Any]) -> list[Any]:
    """Placement's preference order of the hosts that fit (service.hosts.placement.choose, repeatedly)."""
    from kvmkit.service.hosts.placement import choose

    left = [c for c in candidates if c.ok]
    out = []
    while left:
        best = choose(left)
        assert best is not None
        out.append(best)
        left.remove(best)
    return out


def _vms(conn: libvirt.virConnect, include_shut_off: bool) -> list[tuple[str, bool, int, int]]:
    """(name, active, vCPUs, memory MiB): running VMs first, then the shut-off ones, by name."""
    from kvmkit.xml.migration import read_needs

    out = []
    with libvirt_errors("listing the host's VMs"):
        for dom in conn.listAllDomains(0):
            active = bool(dom.isActive())
            if not active and not include_shut_off:
                continue
            needs = read_needs(dom.XMLDesc(0 if active else libvirt.VIR_DOMAIN_XML_INACTIVE))
            out.append((dom.name(), active, needs.vcpus, needs.memory_mib))
    return sorted(out, key=lambda v: (not v[1], v[0]))


def evacuate_host(hosts: Any, name: str, spec: EvacuateSpec, *, connect: Callable[[Any], Any] | None = None,
                  progress: Callable[[float, str], None] | None = None, cancelled: Callable[[], bool] | None = None,
                  hold: Hold | None = None, on_progress: Callable[[str, dict[str, Any]], None] | None = None
                  ) -> dict[str, Any]:
    """Move every VM off host ``name`` (``hosts``: kvmkit.hosts.registry.Hosts). ``connect`` maps a pooled
    connection to the one to use (a task thread's own); ``hold(target)`` holds each VM while it moves."""
    from kvmkit.service.hosts.manage import set_maintenance
    from kvmkit.service.hosts.placement import Candidate, place
    from kvmkit.service.migration.migrate import migrate_vm
    from kvmkit.service.migration.precheck import endpoints, plan_migration
    from kvmkit.service.tasks.runner import Cancelled

    if hosts.store is None:
        raise InvalidInput("no database for the inventory", hint="give --db URL (or KVMKIT_DB)")
    rec = hosts.record(name)
    allowed = set(spec.to) if spec.to else None
    for host in allowed or ():
        hosts.record(host)  # NotFound naming it
    if not rec.maintenance:
        set_maintenance(hosts, name, True)
    hold = hold or _no_hold
    conn = hosts.resolve(name).get()
    vms = _vms(connect(conn) if connect else conn, spec.include_shut_off)
    moved: list[dict[str, Any]] = []
    not_moved: list[dict[str, Any]] = []
    for i, (vm, active, vcpus, memory) in enumerate(vms):
        if cancelled is not None and cancelled():
            not_moved += [{"vm": v[0], "reason": "evacuation cancelled before its turn"} for v in vms[i:]]
            break
        if progress is not None:
            progress(100.0 * i / max(1, len(vms)), f"VM {vm} ({i + 1} of {len(vms)})")
        decision = place(hosts, vcpus=vcpus, memory_mib=memory)
        reasons = {c["name"]: c["reason"] for c in decision["candidates"] if c["name"] != name and not c["ok"]}
        candidates = [Candidate(**c) for c in decision["candidates"]]
        targets = [c.name for c in _ordered(candidates) if c.name != name
                   and (allowed is None or c.name in allowed)]
        for host in [c.name for c in candidates if c.ok and allowed is not None and c.name not in allowed]:
            reasons[host] = "not among the hosts given with --to"
        done = None
        for target in targets:
            try:
                src, dst = endpoints(hosts, name, target)
                if connect is not None:
                    src.conn, dst.conn = connect(src.conn), connect(dst.conn)
                mspec = MigrateSpec(to=target, copy_storage=spec.copy_storage,
                                    bandwidth_mib=spec.bandwidth_mib if active else None,
                                    auto_converge=spec.auto_converge and active)
                plan = plan_migration(src, dst, vm, mspec)
                if plan.refused:
                    reasons[target] = "; ".join(f"{c.name}: {c.detail}" for c in plan.refused)
                    continue
                target_name = f"vm:{vm}" if name == "local" else f"vm:{vm}@{name}"
                with hold(target_name):
                    done = migrate_vm(src, dst, vm, mspec, plan=plan, cancelled=cancelled,
                                      progress=_follow(on_progress, vm))
                break
            except Cancelled:
                not_moved.append({"vm": vm, "reason": "evacuation cancelled during its migration (it stayed)"})
                not_moved += [{"vm": v[0], "reason": "evacuation cancelled before its turn"} for v in vms[i + 1:]]
                return _result(hosts, name, moved, not_moved)
            except KvmkitError as err:
                reasons[target] = err.message
        if done is not None:
            moved.append({"vm": vm, "to": done.get("to"), "mode": done.get("mode"),
                          "downtime_ms": done.get("downtime_ms"), "job_ms": done.get("job_ms"),
                          "unsafe": done.get("unsafe"), "warning": done.get("warning")})
        else:
            why = "; ".join(f"host {h}: {r}" for h, r in reasons.items()) or "no other host in the inventory"
            not_moved.append({"vm": vm, "reason": why})
    if progress is not None:
        progress(100.0, f"{len(moved)} moved, {len(not_moved)} left")
    return _result(hosts, name, moved, not_moved)


def _follow(on_progress: Callable[[str, dict[str, Any]], None] | None,
            vm: str) -> Callable[[dict[str, Any]], None] | None:
    if on_progress is None:
        return None
    return lambda p: on_progress(vm, p)


def _result(hosts: Any, name: str, moved: list[dict[str, Any]], not_moved: list[dict[str, Any]]) -> dict[str, Any]:
    remaining: list[str] | None
    try:
        remaining = sorted(d.name() for d in hosts.resolve(name).get().listAllDomains(0))
    except (libvirt.libvirtError, KvmkitError):
        remaining = None
    return {"host": name, "maintenance": True, "moved": moved, "not_moved": not_moved, "remaining": remaining,
            "empty": remaining == []}
