"""Moving a VM to another host with libvirt's migration API (docs/migration.md).

How: ``virDomainMigrateToURI3`` with ``VIR_MIGRATE_PEER2PEER`` — the source host's libvirtd opens the
destination's URI and runs every phase itself, so a migration completes or is rolled back by libvirt even
when kvmkit (the CLI, or a server) dies half-way, and libvirt's keepalive notices a destination that goes
away. The QEMU driver offers peer-to-peer or managed (the client drives the phases), not direct. When the
destination's URI names no network host (``qemu:///system``: only kvmkit's process can open it), kvmkit
falls back to managed migration (``virDomainMigrate3`` with both connections).

Always ``VIR_MIGRATE_PERSIST_DEST | VIR_MIGRATE_UNDEFINE_SOURCE``: the VM is defined on the destination and
undefined on the source only once the migration succeeded, so it is defined once, on one host.
Live: ``VIR_MIGRATE_LIVE | VIR_MIGRATE_ABORT_ON_ERROR`` (+ ``NON_SHARED_DISK`` for copy_storage,
``AUTO_CONVERGE``, ``POSTCOPY``). Offline: ``VIR_MIGRATE_OFFLINE`` (the definition; kvmkit streams the
disks itself: libvirt copies no storage offline). ``VIR_MIGRATE_UNSAFE`` only when libvirt refuses for want
of shared storage and kvmkit saw, through the destination's libvirt, the very files the source has: then
the storage is shared, on a filesystem libvirt does not recognise as shared (it trusts NFS, GFS2, OCFS2,
Ceph...); the result says so.

While the migration runs (in a thread), the source's job statistics are polled for progress (data
remaining, rate, expected downtime); a cancel aborts the job (``virDomainAbortJob``). After any failure both
hosts are asked where the VM is: it must run on the source and be defined there only; a half-made copy on
the destination, and volumes made there, are removed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt

from kvmkit.service.migration.aftermath import after_failure, locate
from kvmkit.service.migration.model import Endpoint, Plan
from kvmkit.service.migration.precheck import plan_migration, require
from kvmkit.spec.migration import MigrateSpec

POLL_S = 0.25
ProgressFn = Callable[[dict[str, Any]], None]
FLAG_NAMES = {
    libvirt.VIR_MIGRATE_LIVE: "LIVE", libvirt.VIR_MIGRATE_PEER2PEER: "PEER2PEER",
    libvirt.VIR_MIGRATE_PERSIST_DEST: "PERSIST_DEST", libvirt.VIR_MIGRATE_UNDEFINE_SOURCE: "UNDEFINE_SOURCE",
    libvirt.VIR_MIGRATE_NON_SHARED_DISK: "NON_SHARED_DISK", libvirt.VIR_MIGRATE_OFFLINE: "OFFLINE",
    libvirt.VIR_MIGRATE_AUTO_CONVERGE: "AUTO_CONVERGE", libvirt.VIR_MIGRATE_POSTCOPY: "POSTCOPY",
    libvirt.VIR_MIGRATE_UNSAFE: "UNSAFE", libvirt.VIR_MIGRATE_ABORT_ON_ERROR: "ABORT_ON_ERROR",
}


def flag_names(flags: int) -> list[str]:
    return [name for bit, name in FLAG_NAMES.items() if flags & bit]


def migration_flags(plan: Plan, spec: MigrateSpec) -> int:
    flags = libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    if plan.transport == "peer-to-peer":
        flags |= libvirt.VIR_MIGRATE_PEER2PEER
    if plan.mode == "offline":
        return flags | libvirt.VIR_MIGRATE_OFFLINE
    flags |= libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    if plan.copies:
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
    if spec.auto_converge:
        flags |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if spec.postcopy:
        flags |= libvirt.VIR_MIGRATE_POSTCOPY
    return flags


def migration_params(plan: Plan, spec: MigrateSpec) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if spec.bandwidth_mib and plan.mode == "live":
        params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = int(spec.bandwidth_mib)
    if plan.dest_xml:
        params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = plan.dest_xml
    if plan.copies and plan.mode == "live":
        params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [d.target for d in plan.copies]
    return params


def progress_of(stats: dict[str, Any], postcopy: bool) -> dict[str, Any]:
    """libvirt's job statistics as kvmkit reports them (bytes, bytes/s, ms)."""
    total = int(stats.get("data_total", 0))
    remaining = int(stats.get("data_remaining", 0))
    processed = int(stats.get("data_processed", 0))
    percent = 0.0
    if total:
        percent = max(0.0, min(100.0, 100.0 * (total - remaining) / total))
    return {"phase": "postcopy" if postcopy else ("setup" if not total else "copying"),
            "percent": round(percent, 1), "data_total": total, "data_processed": processed,
            "data_remaining": remaining, "memory_bps": int(stats.get("memory_bps", 0)),
            "disk_bps": int(stats.get("disk_bps", 0)), "memory_dirty_rate": int(stats.get("memory_dirty_rate", 0)),
            "iteration": int(stats.get("memory_iteration", 0)),
            "expected_downtime_ms": stats.get("downtime"), "elapsed_ms": int(stats.get("time_elapsed", 0))}


def describe_progress(p: dict[str, Any]) -> str:
    mib = 2**20
    if p.get("phase") == "setup":
        return "migration starting"
    parts = [f"{p['data_remaining'] / mib:.1f} of {p['data_total'] / mib:.1f} MiB left"]
    rate = p.get("memory_bps", 0) + p.get("disk_bps", 0)
    if rate:
        parts.append(f"{rate / mib:.1f} MiB/s")
    if p.get("expected_downtime_ms") is not None:
        parts.append(f"expected downtime {p['expected_downtime_ms']} ms")
    if p.get("phase") == "postcopy":
        parts.append("post-copy")
    return ", ".join(parts)


def migrate_vm(src: Endpoint, dst: Endpoint, name: str, spec: MigrateSpec, *, plan: Plan | None = None,
               progress: ProgressFn | None = None, cancelled: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Move VM ``name`` from ``src`` to ``dst``: pre-checks (MigrationRefused), then the migration.

    ``progress(dict)`` gets :func:`progress_of`'s dict about four times a second; ``cancelled()`` True aborts
    the job (Cancelled once the VM is back on the source). Returns what happened, measured downtime included."""
    from kvmkit.service.migration.volumes import copy_offline, create_dest_volumes, delete_files

    plan = require(plan or plan_migration(src, dst, name, spec))
    started = time.monotonic()
    made: list[str] = []
    try:
        if plan.copies:
            _report(progress, {"phase": "volumes", "percent": 0.0,
                               "message": f"creating {len(plan.copies)} volume(s) on host {dst.name}"})
            create_dest_volumes(dst.conn, plan.copies, made, empty=plan.mode == "offline")
        if plan.copies and plan.mode == "offline":
            def copied(done: int, total: int) -> None:
                _report(progress, {"phase": "copying", "percent": round(100.0 * done / max(1, total), 1),
                                   "data_total": total, "data_processed": done, "data_remaining": total - done})

            copy_offline(src.conn, dst.conn, plan.copies, copied, cancelled)
        outcome = _run(src, dst, plan, spec, progress, cancelled)
        if outcome.error is not None:
            raise outcome.error
    except BaseException as err:
        return after_failure(src, dst, plan, err, made)
    result = _after_success(src, dst, plan, spec, outcome, started)
    if plan.copies:
        deleted, kept = delete_files(src.conn, [d.path for d in plan.copies])
        result["source_volumes_removed"] = deleted
        if kept:
            result["notes"].append("kept on host " + src.name + ": " + "; ".join(kept))
    return result


def _report(progress: ProgressFn | None, data: dict[str, Any]) -> None:
    if progress is not None:
        data.setdefault("message", describe_progress(data) if "data_total" in data else data.get("phase", ""))
        progress(data)


class _Outcome:
    def __init__(self) -> None:
        self.error: libvirt.libvirtError | None = None
        self.flags = 0
        self.postcopy = False
        self.cancel_asked = False
        self.cancel_refused: str | None = None
        self.last: dict[str, Any] = {}


def _unsafe_retry_ok(plan: Plan, err: libvirt.libvirtError) -> bool:
    """libvirt refused for want of shared storage, and kvmkit saw the same files on both hosts."""
    if err.get_error_code() != libvirt.VIR_ERR_MIGRATE_UNSAFE:
        return False
    message = (err.get_error_message() or "").lower()
    if "cache" in message:
        return False  # a caching mode libvirt finds unsafe even on shared storage: the user decides
    writable = [d for d in plan.disks if d.kind == "disk" and not d.readonly and d.action == "shared"]
    return bool(writable) and all(d.same_file for d in writable)


def _run(src: Endpoint, dst: Endpoint, plan: Plan, spec: MigrateSpec, progress: ProgressFn | None,
         cancelled: Callable[[], bool] | None) -> _Outcome:
    out = _Outcome()
    flags = migration_flags(plan, spec)
    params = migration_params(plan, spec)
    while True:
        out.error = None
        out.flags = flags
        _attempt(src, dst, plan, spec, params, flags, out, progress, cancelled)
        if out.error is not None and not (flags & libvirt.VIR_MIGRATE_UNSAFE) and _unsafe_retry_ok(plan, out.error):
            paths = ", ".join(d.path for d in plan.disks if d.kind == "disk" and d.action == "shared")
            plan.unsafe_reason = (f"libvirt refused ('{out.error.get_error_message()}'): it counts only NFS, GFS2, "
                                  "OCFS2, Ceph and the like as shared storage. Host "
                                  f"{dst.name}'s libvirt sees the very same files ({paths}: same size and change "
                                  "time), so the storage is shared on a filesystem libvirt does not recognise; kvmkit "
                                  "passed VIR_MIGRATE_UNSAFE")
            flags |= libvirt.VIR_MIGRATE_UNSAFE
            continue
        return out


def _attempt(src: Endpoint, dst: Endpoint, plan: Plan, spec: MigrateSpec, params: dict[str, Any], flags: int,
             out: _Outcome, progress: ProgressFn | None, cancelled: Callable[[], bool] | None) -> None:
    from kvmkit.service.vms.domains import domain

    dom = domain(src.conn, plan.vm)
    done = threading.Event()

    def run() -> None:
        try:
            if plan.transport == "peer-to-peer":
                dom.migrateToURI3(dst.uri, params, flags)
            else:
                dom.migrate3(dst.conn, params, flags)
        except libvirt.libvirtError as err:
            out.error = err
        finally:
            done.set()

    worker = threading.Thread(target=run, name=f"kvmkit-migrate-{plan.vm}", daemon=True)
    worker.start()
    try:
        while not done.wait(POLL_S):
            _poll(dom, plan, spec, out, progress, cancelled)
    except BaseException:  # Ctrl-C in the CLI, or a progress callback failing: stop the job, then go on failing
        _abort(dom, out)
        done.wait()
        raise
    if out.cancel_asked and out.error is None:
        out.cancel_refused = out.cancel_refused or "the migration had completed when the cancel came"


def _poll(dom: libvirt.virDomain, plan: Plan, spec: MigrateSpec, out: _Outcome, progress: ProgressFn | None,
          cancelled: Callable[[], bool] | None) -> None:
    if cancelled is not None and not out.cancel_asked and cancelled():
        _abort(dom, out)
    if plan.mode != "live":
        return
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return  # the domain left the source (the migration is ending)
    if stats.get("type", 0) == libvirt.VIR_DOMAIN_JOB_NONE:
        return
    if (spec.postcopy and not out.postcopy and int(stats.get("memory_iteration", 0)) >= 2
            and int(stats.get("data_remaining", 0)) > 0):
        try:
            dom.migrateStartPostCopy(0)  # after the first full pass over memory, as virsh --postcopy-after-precopy
            out.postcopy = True
        except libvirt.libvirtError:
            pass  # the pre-copy converged first
    out.last = progress_of(stats, out.postcopy)
    _report(progress, dict(out.last))


def _abort(dom: libvirt.virDomain, out: _Outcome) -> None:
    out.cancel_asked = True
    try:
        dom.abortJob()
    except libvirt.libvirtError as err:
        out.cancel_refused = err.get_error_message() or str(err)


def _after_success(src: Endpoint, dst: Endpoint, plan: Plan, spec: MigrateSpec, out: _Outcome,
                   started: float) -> dict[str, Any]:
    wall = time.monotonic() - started
    stats: dict[str, Any] = {}
    try:
        dom = dst.conn.lookupByUUIDString(plan.uuid)
        if plan.mode == "live":
            # KEEP_COMPLETED: left for others to read too (virsh domjobinfo --completed)
            stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                                 | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    except libvirt.libvirtError:
        dom = None
    notes = list(plan.notes)
    if out.cancel_refused:
        notes.append(f"cancel not done: {out.cancel_refused}")
    where = locate(src, dst, plan.uuid)
    if where["source"].get("defined") and where["dest"].get("active") and not where["source"].get("active"):
        try:
            src.conn.lookupByUUIDString(plan.uuid).undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            notes.append(f"undefined the inactive definition left on host {src.name}")
            where = locate(src, dst, plan.uuid)
        except libvirt.libvirtError as err:
            notes.append(f"host {src.name} still defines the VM: {err.get_error_message()}")
    elapsed, elapsed_net = stats.get("time_elapsed"), stats.get("time_elapsed_net")
    result: dict[str, Any] = {
        "vm": plan.vm, "from": src.name, "to": dst.name, "mode": plan.mode, "transport": plan.transport,
        "flags": flag_names(out.flags), "unsafe": bool(out.flags & libvirt.VIR_MIGRATE_UNSAFE),
        "unsafe_reason": plan.unsafe_reason, "bandwidth_mib": spec.bandwidth_mib,
        "copy_storage": bool(plan.copies), "postcopy": out.postcopy,
        "state": where["dest"].get("state"), "where": where,
        "job_ms": elapsed, "downtime_ms": stats.get("downtime"), "downtime_net_ms": stats.get("downtime_net"),
        "setup_ms": stats.get("setup_time"), "data_total": stats.get("data_total"),
        "data_transferred": stats.get("data_processed"), "memory_bps": stats.get("memory_bps"),
        "disk_transferred": stats.get("disk_processed"), "iterations": stats.get("memory_iteration"),
        "clock_delta_ms": (elapsed - elapsed_net) if elapsed is not None and elapsed_net is not None else None,
        "clock_skew_s": plan.clock_skew_s, "wall_s": round(wall, 3),
        "disks": [d.to_dict() for d in plan.disks], "checks": [c.to_dict() for c in plan.checks], "notes": notes,
    }
    return result
