"""Start-up recovery of snapshot tasks that a dead server left half-done (create, revert, delete).

libvirtd finishes a snapshot create or revert that it was asked for even when the client dies, so those
leave either a whole snapshot or none; what can be left is kvmkit's own part: overlay or memory files
planned for a snapshot that was never made. An external snapshot delete is many calls (per disk a block
commit, a pivot, a definition fix, removing the overlay; then the metadata), so a server killed in the
middle can leave a block job waiting for its pivot, a merged overlay file nobody uses, or a definition
that still names it. Each handler takes ``(conn, task, steps)`` (the task with its intent, the journal)
and returns report lines; it never deletes a file that any domain's disks (or backing chains) name.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import libvirt

from kvmkit.errors import KvmkitError
from kvmkit.service.copies import snapshots
from kvmkit.service.vms.domains import state_of


def _last(steps: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    found = [s for s in steps if s.get("name") == name]
    return (found[-1].get("data") or {}) if found else None


def _used_paths(conn: libvirt.virConnect) -> set[str]:
    """Real paths of every file a domain's disks name (top images and backing stores, live and inactive)."""
    from kvmkit.service.storage.volumes import domains_using

    return {os.path.realpath(p) for p in domains_using(conn, backing=True) if p.startswith("/")}


def _remove_unused(conn: libvirt.virConnect, files: list[str], why: str) -> list[str]:
    report = []
    used = _used_paths(conn)
    for f in files:
        if not f or not os.path.exists(f):
            continue
        if os.path.realpath(f) in used:
            report.append(f"kept {f}: a VM's disk uses it")
            continue
        try:
            os.unlink(f)
            report.append(f"removed {why} {f}")
        except OSError as err:
            report.append(f"could not remove {why} {f}: {err.strerror}; remove it by hand")
    if report:
        snapshots.refresh_pools(conn)
    return report


def _domain(conn: libvirt.virConnect, vm: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(vm)
    except libvirt.libvirtError:
        return None


def _snapshot(dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot | None:
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError:
        return None


def recover_create(conn: libvirt.virConnect, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """A snapshot that libvirt made is kept (it is whole); files planned for one it did not make go."""
    intent = task.get("intent") or {}
    vm = intent.get("vm") or task["target"].removeprefix("vm:")
    planned = _last(steps, "files")
    if planned is None:
        return [f"no snapshot of VM {vm} was begun: nothing to clean up"]
    name = str(planned.get("snapshot"))
    dom = _domain(conn, vm)
    if dom is None:
        return [f"VM {vm} no longer exists", *_remove_unused(conn, planned.get("files") or [], "file of a snapshot")]
    if _snapshot(dom, name) is not None:
        if planned.get("external"):
            snapshots.refresh_pools(conn)
        return [f"snapshot '{name}' of VM {vm} had been made before the server stopped: kept "
                f"(`kvmkit snapshot delete {vm} {name}` removes it)"]
    report = _remove_unused(conn, planned.get("files") or [], "half-made snapshot file")
    return [f"snapshot '{name}' of VM {vm} was not made", *report]


def recover_revert(conn: libvirt.virConnect, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """libvirt reverts whole or not at all: say where the VM is now."""
    intent = task.get("intent") or {}
    vm = intent.get("vm") or task["target"].removeprefix("vm:")
    name = intent.get("snapshot")
    dom = _domain(conn, vm)
    if dom is None:
        return [f"VM {vm} no longer exists"]
    try:
        state = state_of(dom)
        current = dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None
    except (libvirt.libvirtError, KvmkitError) as err:
        return [f"could not read VM {vm}: {err}; check it by hand"]
    if current == name:
        return [f"VM {vm} is {state} at snapshot '{name}' (its current snapshot): the revert went through"]
    return [f"VM {vm} is {state}; its current snapshot is {current or 'none'}, so it was not reverted to "
            f"'{name}': revert again if you still want to"]


def _chain_paths(dom: libvirt.virDomain, conn: libvirt.virConnect, target: str) -> list[dict[str, str]]:
    for d in snapshots.disks(dom.XMLDesc(0), conn):
        if d["target"] == target and d["path"]:
            try:
                return snapshots.backing_chain(d["path"], d["format"])
            except KvmkitError:
                return [{"path": d["path"], "format": d["format"]}]
    return []


def recover_delete(conn: libvirt.virConnect, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """Finish what is safe to finish, undo what is not: abort an unpivoted block job (the overlay stays the
    disk's image, the snapshot stays), point the definition past a merged overlay and remove it, and drop
    the snapshot's record once none of its overlays is in use any more."""
    intent = task.get("intent") or {}
    vm = intent.get("vm") or task["target"].removeprefix("vm:")
    name = str(intent.get("snapshot"))
    plan = _last(steps, "merge-plan")
    overlays: dict[str, str] = (plan or {}).get("overlays") or {}
    dom = _domain(conn, vm)
    if dom is None:
        return [f"VM {vm} no longer exists"]
    snap = _snapshot(dom, name)
    if snap is None:
        return [f"snapshot '{name}' of VM {vm} had been deleted before the server stopped",
                *_remove_unused(conn, list(overlays.values()), "merged overlay")]
    info = snapshots.describe(snap)
    if info["kind"] == "internal" or plan is None:
        return [f"snapshot '{name}' of VM {vm} was not deleted (nothing had been merged): kept; delete it again"]
    overlays = info["overlays"] or overlays
    report: list[str] = []
    remaining = []
    for target, overlay in overlays.items():
        if dom.isActive():
            with contextlib.suppress(libvirt.libvirtError):
                if dom.blockJobInfo(target, 0):
                    dom.blockJobAbort(target, 0)  # a commit waiting for its pivot: the overlay stays on top
                    report.append(f"aborted the unfinished block commit of {vm}/{target}")
        chain = _chain_paths(dom, conn, target)
        real = [os.path.realpath(c["path"]) for c in chain]
        if os.path.realpath(overlay) in real:
            remaining.append(overlay)
            continue
        if chain:  # merged and pivoted: the definition may still name the overlay
            base = next((c for c in chain if c["path"] == _journal_base(steps, target)), chain[0])
            try:
                snapshots._fix_inactive_source(conn, dom, target, overlay, base)
            except KvmkitError as err:
                report.append(f"could not point the definition of {vm}/{target} at {base['path']}: {err}")
                remaining.append(overlay)
                continue
        report += _remove_unused(conn, [overlay], "merged overlay")
    if remaining:
        report.append(f"snapshot '{name}' of VM {vm} kept: {', '.join(remaining)} still in use; delete it again")
        return report
    try:
        snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
    except libvirt.libvirtError as err:
        report.append(f"could not drop the record of snapshot '{name}': {err.get_error_message()}")
        return report
    mem = info.get("memory_file")
    if mem:
        report += _remove_unused(conn, [mem], "memory file")
    report.append(f"finished deleting snapshot '{name}' of VM {vm} (every overlay had been merged)")
    return report


def _journal_base(steps: list[dict[str, Any]], target: str) -> str | None:
    for s in reversed(steps):
        data = s.get("data") or {}
        if data.get("target") == target and data.get("base"):
            return str(data["base"])
    return None
