"""VM snapshots: internal (qcow2, with memory when running), external disk-only overlays, UEFI fallback.

- Internal snapshots keep disk (and, for a running VM, memory) state inside the qcow2 files; revert of a
  running snapshot brings the VM back running exactly where it was (no reboot).
- ``disk_only=True`` makes external snapshots: each disk gets a qcow2 overlay file next to it; deleting
  one merges the overlay back with a block commit (active commit + pivot for a running VM, ``qemu-img
  commit`` for a shut-off one) and removes the file, without stopping the VM.
- VMs with pflash (UEFI) firmware cannot have internal snapshots on this libvirt, so kvmkit makes
  external snapshots for them (plus a memory file when running) and says so in the result.
- Disk-only snapshots of a running VM are quiesced through the guest agent when it answers; every
  snapshot records how consistent it is (``quiesced``, ``consistency``: service/copies/quiesce.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.images.qcow2_header import backing_files
from kvmkit.service.copies import quiesce
from kvmkit.service.vms.domains import domain

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

lookup = domain  # the VM called NAME, or NotFound naming it
# progress(step, data): told before each stage of a create or delete (a task journals it, so the start-up
# recovery of an interrupted task knows which files the operation was making or merging)
Journal = Callable[[str, dict[str, Any]], None]


def _noop(_step: str, _data: dict[str, Any]) -> None:
    return None


def check_name(name: str, what: str = "name") -> str:
    try:
        from kvmkit.spec.common import validate_name
    except ImportError:
        if not NAME_RE.match(name or ""):
            raise InvalidInput(f"invalid {what} '{name}'",
                               hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter/digit") from None
        return name
    return validate_name(name, what)


def qemu_img(*args: str) -> str:
    """Run qemu-img with the given arguments (formats always passed by the caller); return stdout."""
    res = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise OperationFailed(f"qemu-img {args[0]} failed: {res.stderr.strip()}",
                              hint="check the image files and free space")
    return res.stdout


def backing_chain(path: str, fmt: str) -> list[dict[str, str]]:
    """[{path, format}] from the top image down to its base (-U: works while a VM uses the files)."""
    out = json.loads(qemu_img("info", "-U", "--backing-chain", "--output=json", "-f", fmt, path))
    return [{"path": i["filename"], "format": i["format"]} for i in out]


def volume_path(conn: libvirt.virConnect | None, pool: str | None, volume: str | None) -> str | None:
    """The file behind a <disk type='volume'> (None when it cannot be resolved)."""
    if conn is None or not pool or not volume:
        return None
    try:
        return conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path()
    except libvirt.libvirtError:
        return None


def disks(xml: str, conn: libvirt.virConnect | None = None) -> list[dict[str, Any]]:
    """Writable disks of a domain XML: [{target, path, format, type}] (pool volumes resolved with ``conn``)."""
    root = etree.fromstring(xml.encode())
    found = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None \
                or disk.find("shareable") is not None:
            continue
        src, drv, tgt = disk.find("source"), disk.find("driver"), disk.find("target")
        path = src.get("file") if src is not None else None
        if disk.get("type") == "volume" and src is not None:
            path = volume_path(conn, src.get("pool"), src.get("volume"))
        found.append({"target": tgt.get("dev") if tgt is not None else "?", "path": path,
                      "format": drv.get("type", "raw") if drv is not None else "raw", "type": disk.get("type")})
    return found


def is_uefi(xml: str) -> bool:
    root = etree.fromstring(xml.encode())
    loader = root.find("os/loader")
    return root.find("os").get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")


def _snap(dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot:
    try:
        return dom.snapshotLookupByName(name, 0)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
            raise NotFound(f"VM '{dom.name()}' has no snapshot '{name}'",
                           hint=f"`kvmkit snapshot list {dom.name()}` shows its snapshots") from err
        raise


def refresh_pools(conn: libvirt.virConnect) -> None:
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)


def describe(snap: libvirt.virDomainSnapshot) -> dict[str, Any]:
    root = etree.fromstring(snap.getXMLDesc(0).encode())
    mem = root.find("memory")
    disk_modes = {d.get("name"): d.get("snapshot") for d in root.iterfind("disks/disk")}
    external = any(m == "external" for m in disk_modes.values())
    overlays = {d.get("name"): d.find("source").get("file") for d in root.iterfind("disks/disk")
                if d.get("snapshot") == "external" and d.find("source") is not None}
    parent = root.findtext("parent/name")
    created = int(root.findtext("creationTime") or 0)
    return {
        "name": snap.getName(), "parent": parent, "state": root.findtext("state"),
        "description": root.findtext("description") or "",
        "created": datetime.fromtimestamp(created, UTC).isoformat(),
        "kind": "external" if external else "internal",
        "memory": mem is not None and mem.get("snapshot") in ("internal", "external"),
        "memory_file": mem.get("file") if mem is not None and mem.get("snapshot") == "external" else None,
        "overlays": overlays, "current": bool(snap.isCurrent(0)),
        **quiesce.note_of(snap.getDomain(), snap.getName()),  # quiesced, consistency (service/copies/quiesce.py)
    }


def create_snapshot(conn: libvirt.virConnect, vm: str, name: str | None = None, *, disk_only: bool = False,
                    description: str | None = None, progress: Journal | None = None) -> dict[str, Any]:
    """Snapshot ``vm``: internal (with memory when running) unless ``disk_only`` or the VM boots UEFI.

    ``progress("files", {...})`` is told the snapshot's name and the files it is about to make before
    libvirt makes them, and ``progress("refresh", ...)`` before the pools are refreshed afterwards."""
    say = progress or _noop
    dom = lookup(conn, vm)
    name = check_name(name or datetime.now(UTC).strftime("snap-%Y%m%d-%H%M%S"), "snapshot name")
    with contextlib.suppress(NotFound):
        _snap(dom, name)
        raise Conflict(f"VM '{vm}' already has a snapshot '{name}'", hint="pick another snapshot name")
    xml = dom.XMLDesc(0)
    running = dom.isActive() == 1
    uefi = is_uefi(xml)
    external = disk_only or uefi
    disk_list = disks(xml, conn)
    if not disk_list:
        raise InvalidState(f"VM '{vm}' has no writable disk: a snapshot needs at least one (qcow2 for internal "
                           "snapshots, which also hold the memory of a running VM)",
                           hint=f"attach a qcow2 disk first (`kvmkit vm disk attach {vm} ...`)")
    if not external:
        for d in disk_list:
            if d["format"] != "qcow2":
                raise InvalidState(
                    f"VM '{vm}' disk {d['target']} ({d['path']}) is {d['format']}: internal snapshots need qcow2",
                    hint=f"convert it with `kvmkit image convert {d['path']} NEW.qcow2 --format qcow2` and point "
                    "the VM at the copy, or use `--disk-only` (external overlay snapshot)")
    if external:
        for d in disk_list:
            if d["path"] is None or d["type"] not in ("file", "volume", None):
                raise InvalidState(f"VM '{vm}' disk {d['target']} is not a file: external snapshots need file disks")
    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = name
    if description:
        etree.SubElement(root, "description").text = description
    created_files: list[str] = []
    if external:
        if uefi and running and not disk_only:
            mem_file = str(Path(disk_list[0]["path"] if disk_list else "/var/lib/libvirt/qemu/snapshot")
                           .parent / f"{vm}.{name}.mem")
            if os.path.exists(mem_file):
                raise Conflict(f"memory file {mem_file} exists already", hint="pick another snapshot name")
            etree.SubElement(root, "memory", snapshot="external", file=mem_file)
            created_files.append(mem_file)
        dx = etree.SubElement(root, "disks")
        for d in disk_list:
            overlay = str(Path(d["path"]).parent / f"{vm}-{d['target']}.{name}.qcow2")
            if os.path.exists(overlay):
                raise Conflict(f"overlay file {overlay} exists already", hint="pick another snapshot name")
            el = etree.SubElement(dx, "disk", name=d["target"], snapshot="external", type="file")
            etree.SubElement(el, "driver", type="qcow2")
            etree.SubElement(el, "source", file=overlay)
            created_files.append(overlay)
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    if external and (disk_only or not running):
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
    snap_xml = etree.tostring(root, encoding="unicode")
    say("files", {"snapshot": name, "external": external, "files": created_files})
    try:
        with libvirt_errors(f"snapshot {vm}/{name}"):
            snap, note = quiesce.create(dom, snap_xml, flags, running=running)
    except Exception:
        for f in created_files:  # ATOMIC: libvirt undoes its part; remove what might be left on disk
            with contextlib.suppress(OSError):
                os.unlink(f)
        raise
    quiesce.record(dom, name, note)
    if external:
        say("refresh", {"snapshot": name})
        refresh_pools(conn)
    result = describe(snap)
    result["vm"] = vm
    if uefi:
        result["note"] = ("UEFI/pflash VM: internal snapshots are not supported for pflash firmware on this "
                          "libvirt, so kvmkit made an external snapshot (overlay files"
                          + (" and a memory file)" if running and not disk_only else ")"))
    return result


def list_snapshots(conn: libvirt.virConnect, vm: str) -> list[dict[str, Any]]:
    """All snapshots of ``vm`` in tree order (parents before children), each with ``depth`` and ``children``."""
    dom = lookup(conn, vm)
    with libvirt_errors(f"list snapshots of {vm}"):
        items = {s.getName(): describe(s) for s in dom.listAllSnapshots(0)}
    for item in items.values():
        item["children"] = sorted((c["name"] for c in items.values() if c["parent"] == item["name"]),
                                  key=lambda n: (items[n]["created"], n))  # seconds only: ties by name
    ordered: list[dict[str, Any]] = []

    def walk(name: str, depth: int) -> None:
        items[name]["depth"] = depth
        ordered.append(items[name])
        for child in items[name]["children"]:
            walk(child, depth + 1)

    for root_name in sorted((n for n, i in items.items() if not i["parent"] or i["parent"] not in items),
                            key=lambda n: (items[n]["created"], n)):  # seconds only: ties by name
        walk(root_name, 0)
    return ordered


def current_snapshot(conn: libvirt.virConnect, vm: str) -> dict[str, Any] | None:
    dom = lookup(conn, vm)
    if not dom.hasCurrentSnapshot(0):
        return None
    with libvirt_errors(f"current snapshot of {vm}"):
        return describe(dom.snapshotCurrent(0))


def revert_snapshot(conn: libvirt.virConnect, vm: str, name: str) -> dict[str, Any]:
    """Return ``vm`` to snapshot ``name``; a snapshot of a running VM comes back running (no reboot)."""
    dom = lookup(conn, vm)
    snap = _snap(dom, name)
    info = describe(snap)
    if info["kind"] == "external":
        raise InvalidState(f"snapshot '{name}' of '{vm}' is external: this libvirt ({_libvirt_version(conn)}) "
                           "cannot revert external snapshots",
                           hint="delete it to merge the overlay back, or use internal snapshots (qcow2 disks, "
                           "without --disk-only) for revertable checkpoints")
    snap_root = etree.fromstring(snap.getXMLDesc(0).encode())
    snap_dom = snap_root.find("domain")
    if snap_dom is not None:  # reverting rewrites the disks the snapshot lives in: not a linked clone's base
        for d in disks(etree.tostring(snap_dom, encoding="unicode"), conn):
            if d["path"]:
                _ensure_not_shared(conn, dom, d["path"], f"revert '{vm}' to '{name}'")
    snap = _keep_log_history(dom, snap)
    with libvirt_errors(f"revert {vm} to {name}"):
        dom.revertToSnapshot(snap, 0)
    state = "running" if dom.isActive() and dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING else \
        ("paused" if dom.isActive() else "shut off")
    return {"vm": vm, "snapshot": name, "state": state}


def _keep_log_history(dom: libvirt.virDomain, snap: libvirt.virDomainSnapshot) -> libvirt.virDomainSnapshot:
    """A revert starts QEMU from the definition saved in the snapshot; saved without ``append='on'`` (by an
    older kvmkit or another tool) it would truncate the serial log. Add it to the snapshot's saved
    definition first (libvirt's snapshot redefine; nothing else of the snapshot changes)."""
    from kvmkit.xml.chardevs import keep_log_history

    root = etree.fromstring(snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE).encode())
    changed = [f for saved in (root.find("domain"), root.find("inactiveDomain")) if saved is not None
               for f in keep_log_history(saved)]
    if not changed:
        return snap
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if snap.isCurrent(0):
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    with libvirt_errors(f"marking the serial log saved in snapshot {dom.name()}/{snap.getName()} append-only"):
        return dom.snapshotCreateXML(etree.tostring(root, encoding="unicode"), flags)


def _libvirt_version(conn: libvirt.virConnect) -> str:
    v = conn.getLibVersion()
    return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"


def delete_snapshot(conn: libvirt.virConnect, vm: str, name: str, *,
                    progress: Journal | None = None) -> dict[str, Any]:
    """Delete snapshot ``name``; children stay usable. External overlays are merged back (block commit).

    ``progress`` is told each stage of an external delete before it is taken: "merge-plan" (the overlays),
    then per disk "commit", "commit-started" (a running VM's block job is under way), "fix-definition",
    "remove-overlay", and finally "delete-metadata"."""
    say = progress or _noop
    dom = lookup(conn, vm)
    snap = _snap(dom, name)
    info = describe(snap)
    if info["kind"] == "internal":
        with libvirt_errors(f"delete snapshot {vm}/{name}"):
            snap.delete(0)
        quiesce.forget(dom, name)
        return {"vm": vm, "deleted": name, "kind": "internal", "merged": []}
    _ensure_no_internal_inside(dom, name, set(info["overlays"].values()))
    plans = [_plan_merge(conn, dom, target, overlay) for target, overlay in info["overlays"].items()]
    say("merge-plan", {"snapshot": name, "overlays": info["overlays"], "memory_file": info.get("memory_file")})
    merged = []
    for plan in plans:  # every disk was checked before the first one is touched
        if plan is not None:
            _merge_overlay(dom, plan, say)
            merged.append(plan["overlay"])
    say("delete-metadata", {"snapshot": name})
    with libvirt_errors(f"delete snapshot metadata {vm}/{name}"):
        snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
    quiesce.forget(dom, name)
    mem = info.get("memory_file")
    if mem:
        with contextlib.suppress(OSError):
            os.unlink(mem)
    refresh_pools(conn)
    return {"vm": vm, "deleted": name, "kind": "external", "merged": merged}


def _ensure_no_internal_inside(dom: libvirt.virDomain, name: str, overlays: set[str]) -> None:
    """An overlay about to be merged and removed must not hold internal snapshots of its own."""
    real = {os.path.realpath(o) for o in overlays}
    for other in dom.listAllSnapshots(0):
        if other.getName() == name:
            continue
        root = etree.fromstring(other.getXMLDesc(0).encode())
        if any(d.get("snapshot") == "external" for d in root.iterfind("disks/disk")) or root.find("domain") is None:
            continue
        for d in disks(etree.tostring(root.find("domain"), encoding="unicode")):
            if d["path"] and os.path.realpath(d["path"]) in real:
                raise InvalidState(f"internal snapshot '{other.getName()}' of '{dom.name()}' is stored in "
                                   f"{d['path']}, which deleting '{name}' would merge and remove",
                                   hint=f"delete snapshot '{other.getName()}' first")


def _current_disk(dom: libvirt.virDomain, target: str) -> dict[str, Any]:
    for d in disks(dom.XMLDesc(0), dom.connect()):
        if d["target"] == target:
            return d
    raise InvalidState(f"VM '{dom.name()}' has no disk {target} any more", hint="the snapshot no longer matches")


def _plan_merge(conn: libvirt.virConnect, dom: libvirt.virDomain, target: str, overlay: str) -> dict[str, Any] | None:
    """Check that ``overlay`` can be committed into its backing file; None when it is gone already."""
    disk = _current_disk(dom, target)
    chain = backing_chain(disk["path"], disk["format"])
    paths = [os.path.realpath(c["path"]) for c in chain]
    real = os.path.realpath(overlay)
    if real not in paths:
        if not os.path.exists(overlay):
            return None  # merged or removed already: only the snapshot's record is left to delete
        raise InvalidState(f"overlay {overlay} is not in the backing chain of {dom.name()}/{target} any more",
                           hint=f"if nothing uses it, remove {overlay} and delete the snapshot again (kvmkit then "
                           "drops only its record)")
    idx = paths.index(real)
    if idx + 1 >= len(chain):
        raise InvalidState(f"overlay {overlay} has no backing file to merge into")
    base = chain[idx + 1]
    _ensure_not_shared(conn, dom, base["path"], f"merge {overlay} into {base['path']}")
    return {"target": target, "overlay": overlay, "idx": idx, "chain": chain, "base": base}


def _merge_overlay(dom: libvirt.virDomain, plan: dict[str, Any], say: Journal = _noop) -> None:
    """Commit the planned overlay into its backing file and drop it from the disk's chain."""
    conn = dom.connect()
    target, overlay, idx, chain, base = plan["target"], plan["overlay"], plan["idx"], plan["chain"], plan["base"]
    where = {"target": target, "overlay": overlay, "base": base["path"]}
    say("commit", where)
    if dom.isActive():
        if idx == 0:
            with libvirt_errors(f"active block commit of {dom.name()}/{target}"):
                dom.blockCommit(target, base["path"], overlay, 0, libvirt.VIR_DOMAIN_BLOCK_COMMIT_ACTIVE)
                say("commit-started", where)
                _wait_job(dom, target, pivot=True)
        else:
            with libvirt_errors(f"block commit of {dom.name()}/{target}"):
                dom.blockCommit(target, base["path"], overlay, 0, 0)
                say("commit-started", where)
                _wait_job(dom, target, pivot=False)
        say("fix-definition", where)
        _fix_inactive_source(conn, dom, target, overlay, base)
    else:
        qemu_img("commit", "-f", "qcow2", overlay)
        say("fix-definition", where)
        if idx == 0:
            _fix_inactive_source(conn, dom, target, overlay, base)
        else:
            child = chain[idx - 1]
            qemu_img("rebase", "-u", "-f", child["format"], "-b", base["path"], "-F", base["format"], child["path"])
    say("remove-overlay", where)
    with contextlib.suppress(OSError):
        os.unlink(overlay)


def _ensure_not_shared(conn: libvirt.virConnect, dom: libvirt.virDomain, base: str, doing: str) -> None:
    """Refuse to write into a file that another VM (a linked clone) uses as a backing file."""
    real = os.path.realpath(base)
    for other in conn.listAllDomains():
        if other.UUIDString() == dom.UUIDString():
            continue
        try:
            other_disks = disks(other.XMLDesc(0), conn)
        except libvirt.libvirtError:
            continue  # it vanished while we looked
        for d in other_disks:
            if d["path"] and d["format"] == "qcow2" and os.path.exists(d["path"]):
                below = backing_files(d["path"])  # from the headers: no qemu-img per disk on the host
                if below is None:
                    try:
                        below = [c["path"] for c in backing_chain(d["path"], d["format"])[1:]]
                    except OperationFailed:
                        continue
                if real in (os.path.realpath(p) for p in below):
                    raise InvalidState(f"cannot {doing}: VM '{other.name()}' uses {base} as a backing file "
                                       "(a linked clone)", hint=f"delete '{other.name()}' first (or make a full "
                                       f"clone of it with `kvmkit vm clone {other.name()} NEW` and delete it)")


def _wait_job(dom: libvirt.virDomain, target: str, *, pivot: bool, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = dom.blockJobInfo(target, 0)
        if not info:
            if pivot:
                raise OperationFailed(f"block commit of {dom.name()}/{target} ended before it could pivot")
            return
        if pivot and info["end"] > 0 and info["cur"] == info["end"]:
            try:
                dom.blockJobAbort(target, libvirt.VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                return
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_BLOCK_COPY_ACTIVE and "not ready" not in str(err):
                    raise
        time.sleep(0.2)
    with contextlib.suppress(libvirt.libvirtError):
        dom.blockJobAbort(target, 0)
    raise OperationFailed(f"block commit of {dom.name()}/{target} did not finish in {timeout:.0f} s")


def _fix_inactive_source(conn: libvirt.virConnect, dom: libvirt.virDomain, target: str, overlay: str,
                         base: dict[str, str]) -> None:
    """Point the persistent definition's disk at ``base`` if it still names ``overlay``."""
    if not dom.isPersistent():
        return
    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE).encode())
    changed = False
    for disk in root.iterfind("devices/disk"):
        tgt, src = disk.find("target"), disk.find("source")
        if tgt is None or src is None or tgt.get("dev") != target:
            continue
        if os.path.realpath(src.get("file") or "") == os.path.realpath(overlay):
            src.set("file", base["path"])
            disk.find("driver").set("type", base["format"])
            for bs in disk.findall("backingStore"):
                disk.remove(bs)
            changed = True
    if changed:
        with libvirt_errors(f"update the definition of {dom.name()}"):
            conn.defineXML(etree.tostring(root, encoding="unicode"))
