"""The host inventory as users manage it: add (checked), list (each host asked at once), remove (refused
while it has VMs), maintenance, limits. The CLI (`kvmkit host ...`) and the API (/api/v1/hosts) call these."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from kvmkit.errors import Conflict, InvalidInput, InvalidState, KvmkitError
from kvmkit.hosts import inventory
from kvmkit.hosts.inventory import HostRecord
from kvmkit.hosts.pool import HostDown, HostHandle
from kvmkit.service.hosts.listing import ask_hosts
from kvmkit.spec.host import HostLimits, HostSpec

if TYPE_CHECKING:
    from kvmkit.hosts.registry import Hosts

LIST_TIMEOUT_S = 30.0


class Unanswered(InvalidState):
    """The URI given does not answer: the caller's to fix (409, not the 503 of a known host that is down)."""

    code = "host_down"  # a host's first listing probes its guest type (boots a tiny guest: seconds)


def row(rec: HostRecord, handle: HostHandle | None, facts: dict[str, Any] | None, error: str | None,
        virt: tuple[str, str] | None) -> dict[str, Any]:
    """One ``host list`` row: the inventory's record, the host's state and what it said about itself."""
    reachable = facts is not None
    state = "maintenance" if rec.maintenance and reachable else ("up" if reachable else "down")
    out: dict[str, Any] = {
        "name": rec.name, "uri": rec.uri, "local": rec.local, "state": state, "maintenance": rec.maintenance,
        "reachable": reachable, "error": error, "ssh_key": rec.ssh_key, "max_memory_mib": rec.max_memory_mib,
        "cpu_overcommit": rec.cpu_overcommit,
        "virt_type": virt[0] if virt else None, "virt_type_reason": virt[1] if virt else None,
    }
    keys = ("hostname", "libvirt_version", "qemu_version", "cpu_model", "cpus", "cores", "numa_nodes",
            "memory_mib", "free_memory_mib", "vms", "vms_running", "vcpus_running", "memory_running_mib")
    for key in keys:
        out[key] = facts.get(key) if facts else None
    return out


def describe(rec: HostRecord, handle: HostHandle, *, probe: bool = True) -> dict[str, Any]:
    """The row of one host, asking it (its guest type probed on it when ``probe``)."""
    from kvmkit.service.hosts.facts import guest_type, host_facts

    conn = handle.get()
    facts = host_facts(conn)
    virt = guest_type(conn) if probe else None
    return row(rec, handle, facts, None, virt)


def host_rows(hosts: Hosts, *, timeout: float = LIST_TIMEOUT_S, probe: bool = True) -> list[dict[str, Any]]:
    """Every host of the inventory, all asked at once; a host that does not answer is listed as down."""
    pairs = hosts.handles()
    answers = ask_hosts([(rec.name, functools.partial(describe, rec, h, probe=probe)) for rec, h in pairs], timeout)
    out = []
    for (rec, h), (answer, got) in zip(pairs, answers, strict=True):
        out.append(got if got is not None else row(rec, h, None, answer.error, None))
    return out


def show_host(hosts: Hosts, name: str) -> dict[str, Any]:
    rec = hosts.record(name)
    handle = hosts.resolve(name)
    try:
        return describe(rec, handle)
    except KvmkitError as err:
        return row(rec, handle, None, err.message, None)


def add_host(hosts: Hosts, spec: HostSpec, *, check: bool = True) -> dict[str, Any]:
    """Add ``spec`` to the inventory; with ``check`` only once its libvirt answers (nothing added otherwise)."""
    import os

    if hosts.store is None:
        raise InvalidInput("no database for the inventory", hint="give --db URL (or KVMKIT_DB)")
    if spec.ssh_key and not os.path.isfile(spec.ssh_key):
        raise InvalidInput(f"ssh key {spec.ssh_key} is not a file", hint="give the private key's path")
    rec = HostRecord(spec.name, spec.uri, spec.ssh_key)
    facts = None
    if check:
        from kvmkit.hosts.pool import HostHandle as Handle

        probe = Handle(spec.name, rec.connect_uri, connect_timeout=hosts.pool.connect_timeout)
        try:
            from kvmkit.service.hosts.facts import host_facts

            facts = host_facts(probe.get())
        except HostDown as err:
            raise Unanswered(f"host '{spec.name}' does not answer at {spec.uri}: {err.message.split(': ', 1)[-1]}",
                             hint="check the URI and that libvirtd runs there; --no-check adds it anyway "
                                  "(it is listed as down until it answers)") from err
        finally:
            probe.close()
    added = inventory.add(hosts.store, spec, hosts.local_uri)
    hosts.reload()
    return row(added, None, facts, None if check else "not checked", None)


def remove_host(hosts: Hosts, name: str, *, force: bool = False, timeout: float = 10.0) -> dict[str, Any]:
    """Forget host ``name`` (its VMs are not touched); refused while it has VMs, or cannot tell, unless forced."""
    if hosts.store is None:
        raise InvalidInput("no database for the inventory", hint="give --db URL (or KVMKIT_DB)")
    rec = hosts.record(name)
    if rec.local:
        raise InvalidInput("the local host cannot be removed", hint=f"put it in maintenance: kvmkit host maintenance "
                           f"{name} on")
    handle = hosts.resolve(name)
    vms: list[str] | None = None
    if not force:
        answer, got = ask_hosts([(name, lambda: [d.name() for d in handle.get().listAllDomains()])], timeout)[0]
        if got is None:
            raise Conflict(f"cannot tell whether host '{name}' has VMs: {answer.error}",
                           hint="bring it back, or --force to forget it anyway (its VMs stay on it)")
        vms = sorted(got)
        if vms:
            shown = ", ".join(vms[:5]) + (f" and {len(vms) - 5} more" if len(vms) > 5 else "")
            raise Conflict(f"host '{name}' has {len(vms)} VM(s): {shown}",
                           hint="delete or move them first, or --force to forget the host anyway "
                                "(its VMs stay on it, out of kvmkit's sight)")
    inventory.remove(hosts.store, name)
    hosts.reload()
    return {"name": name, "removed": True, "uri": rec.uri, "vms_left": vms}


def set_maintenance(hosts: Hosts, name: str, on: bool) -> dict[str, Any]:
    if hosts.store is None:
        raise InvalidInput("no database for the inventory", hint="give --db URL (or KVMKIT_DB)")
    hosts.record(name)  # NotFound naming it
    rec = inventory.set_maintenance(hosts.store, name, on, hosts.local_uri)
    hosts.reload()
    return {"name": rec.name, "maintenance": rec.maintenance}


def set_limits(hosts: Hosts, name: str, limits: HostLimits) -> dict[str, Any]:
    if hosts.store is None:
        raise InvalidInput("no database for the inventory", hint="give --db URL (or KVMKIT_DB)")
    hosts.record(name)
    rec = inventory.set_limits(hosts.store, name, limits, hosts.local_uri)
    hosts.reload()
    return {"name": rec.name, "max_memory_mib": rec.max_memory_mib, "cpu_overcommit": rec.cpu_overcommit}
