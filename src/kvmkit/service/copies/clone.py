"""Clone a VM: full copies or linked qcow2 overlays, with a new name, UUID, MACs and serial log.

What the clone's XML looks like is decided in clone_xml.py (pure); here the copies are made. A file
disk is copied next to its source; a pool volume into its own pool (a file in a directory pool, a new
volume filled by libvirt in a logical or other pool); a block device no pool can make another of (a
raw device, an iSCSI LUN) into a file in the 'default' pool. Network disks are refused. A UEFI VM's
NVRAM file is copied to one of its own.

The source must be shut off or paused while its disks are read. A linked clone needs a base that never
changes again, so kvmkit first gives the source an external disk-only snapshot (``linked-<NEW>``): the
source's disks become a shared read-only base, the source keeps writing to its own new overlay, and the
clone gets an overlay on the same base (backing format always explicit). Deleting that snapshot on the
source is refused while the clone uses the base. On any failure everything made so far is removed.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidState, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.images.plain_copy import copy_file
from kvmkit.service.copies import snapshots
from kvmkit.service.copies.clone_xml import DiskRef, disk_refs, point_disk, rename_identity, set_macs
from kvmkit.xml.chardevs import keep_log_history

__all__ = ["clone_vm", "convert", "new_macs", "rename_identity", "scaled", "virtual_size"]
PATH_POOLS = ("dir", "fs", "netfs")                       # volumes are files in the pool's directory
NO_NEW_VOLUMES = ("iscsi", "iscsi-direct", "scsi", "mpath")  # volumes are host LUNs: no new ones

Progress = Callable[[float], None]  # receives the overall percentage, 0..100


def convert(src: str, src_fmt: str, dst: str, dst_fmt: str, *, compress: bool = False, shared: bool = False,
            progress: Progress | None = None) -> None:
    """qemu-img convert with explicit formats (-c compresses, -U reads an image a VM holds open)."""
    cmd = ["qemu-img", "convert", "-p", "-f", src_fmt, "-O", dst_fmt]
    if compress:
        cmd.append("-c")
    if shared:
        cmd.append("-U")
    proc = subprocess.Popen([*cmd, src, dst], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    buf = b""
    while chunk := proc.stdout.read1(256):  # type: ignore[attr-defined]
        buf = (buf + chunk)[-256:]
        found = re.findall(rb"\(([0-9.]+)/100%\)", buf)
        if found and progress:
            progress(float(found[-1]))
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.wait() != 0:
        with contextlib.suppress(OSError):
            os.unlink(dst)
        raise OperationFailed(f"copying {src} to {dst} failed: {err.strip()[-400:]}",
                              hint="check free space and that the source image is readable")


def scaled(progress: Progress | None, start: float, span: float) -> Progress | None:
    """A progress callback mapping 0..100 onto start..start+span of the caller's overall bar."""
    if progress is None:
        return None
    return lambda pct: progress(start + span * pct / 100.0)


def virtual_size(path: str, fmt: str) -> int:
    import json

    return int(json.loads(snapshots.qemu_img("info", "-U", "--output=json", "-f", fmt, path))["virtual-size"])


def new_macs(conn: libvirt.virConnect, root: etree._Element) -> list[str]:
    """Give every interface of ``root`` a fresh unused MAC (a failover pair shares its new one); return them."""
    from kvmkit.service.vms.macs import generate_mac, used_macs

    chosen: set[str] = set()
    used = used_macs(conn) if root.find("devices/interface") is not None else {}  # one pass over the domains

    def fresh() -> str:
        mac = generate_mac(conn, used=used, avoid=chosen)
        chosen.add(mac)
        return mac

    return set_macs(root, fresh)


def clone_vm(conn: libvirt.virConnect, src: str, new: str, *, linked: bool = False,
             progress: Progress | None = None) -> dict[str, Any]:
    """Clone ``src`` as ``new`` (full copy, or linked overlays); the source must be shut off or paused."""
    snapshots.check_name(new, "VM name")
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(new)
        raise Conflict(f"a VM named '{new}' exists already", hint="pick another name for the clone")
    dom = snapshots.lookup(conn, src)
    state = dom.info()[0]
    if dom.isActive() and state != libvirt.VIR_DOMAIN_PAUSED:
        raise InvalidState(f"VM '{src}' is running: a clone needs it shut off or paused while its disks are copied",
                           hint=f"`kvmkit vm suspend {src}` (then `kvmkit vm resume {src}` after the clone) "
                           f"or `kvmkit vm shutdown {src}`")
    made = Made()
    linked_snap: str | None = None
    defined = None
    try:
        inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        refs = disk_refs(etree.fromstring(inactive.encode()), src)  # refuses disks it cannot copy, early
        if linked:
            _check_linkable(conn, src, refs)
            if snapshots.disks(inactive, conn):
                linked_snap = f"linked-{new}"[:64]
                snapshots.create_snapshot(conn, src, linked_snap, disk_only=True,
                                          description=f"base of linked clone '{new}' (keep while '{new}' exists)")
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE
                                            | libvirt.VIR_DOMAIN_XML_SECURE).encode())
        ident = rename_identity(root, src, new)
        keep_log_history(root)  # the clone's own log, append-only from its first boot
        macs = new_macs(conn, root)
        disk_out = _copy_disks(conn, disk_refs(root, src), new, linked=linked, shared=bool(dom.isActive()),
                               made=made, progress=progress)
        if ident["nvram"] and os.path.exists(ident["nvram"][0]):
            if os.path.exists(ident["nvram"][1]):
                raise Conflict(f"NVRAM file {ident['nvram'][1]} exists already", hint="remove it or pick another name")
            made.files.append(ident["nvram"][1])
            copy_file(*ident["nvram"])
        with libvirt_errors(f"define clone {new}"):
            defined = conn.defineXML(etree.tostring(root, encoding="unicode"))
    except BaseException:
        _rollback(conn, src, made, linked_snap)
        raise
    snapshots.refresh_pools(conn)
    if progress:
        progress(100.0)
    return {"name": new, "source": src, "linked": linked, "uuid": defined.UUIDString(), "disks": disk_out,
            "macs": macs, "serial_logs": ident["serial_logs"], "source_snapshot": linked_snap,
            "nvram": ident["nvram"][1] if ident["nvram"] else None}


class Made:
    """What a clone made so far, removed again if it fails: files and pool volumes."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self.volumes: list[libvirt.virStorageVol] = []


class Found:
    """The pool volume at a disk's path: the volume, its pool and the pool's type."""

    def __init__(self, vol: libvirt.virStorageVol) -> None:
        self.vol = vol
        self.pool = vol.storagePoolLookupByVolume()
        self.type = etree.fromstring(self.pool.XMLDesc(0).encode()).get("type", "")


def _pool_of(conn: libvirt.virConnect, path: str) -> Found | None:
    """The pool volume at ``path``, or None when no (running) pool has it."""
    try:
        return Found(conn.storageVolLookupByPath(path))
    except libvirt.libvirtError:
        return None


def _volume_format(vol: libvirt.virStorageVol) -> str:
    with libvirt_errors(f"read volume {vol.path()}"):
        fmt = etree.fromstring(vol.XMLDesc(0).encode()).find("target/format")
    return fmt.get("type", "raw") if fmt is not None else "raw"


def _check_linkable(conn: libvirt.virConnect, src: str, refs: list[DiskRef]) -> None:
    for ref in refs:
        path = ref.path if ref.kind != "volume" else snapshots.volume_path(conn, ref.pool, ref.volume)
        found = _pool_of(conn, path) if path and ref.kind == "volume" else None
        if ref.kind == "block" or (found is not None and found.type not in PATH_POOLS):
            raise InvalidState(f"disk {ref.target} of '{src}' is a block device: a linked clone needs file disks "
                               "(a qcow2 overlay on a base file)", hint="make a full clone (without --linked)")


def _copy_disks(conn: libvirt.virConnect, refs: list[DiskRef], new: str, *, linked: bool, shared: bool,
                made: Made, progress: Progress | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    count = max(len(refs), 1)
    for i, ref in enumerate(refs):
        part = scaled(progress, 100 * i / count, 100 / count)
        path = ref.path if ref.kind != "volume" else snapshots.volume_path(conn, ref.pool, ref.volume)
        if not path:
            raise InvalidState(f"disk {ref.target}: volume '{ref.volume}' of pool '{ref.pool}' is not there "
                               "(or the pool is not running)",
                               hint=f"`kvmkit pool start {ref.pool}`, or fix the disk's source")
        found = _pool_of(conn, path) if ref.kind != "file" else None
        # without <driver type>, libvirt reads a volume's format from its pool, else takes raw
        fmt = ref.fmt or (_volume_format(found.vol) if found is not None and ref.kind == "volume" else "raw")
        if linked:
            out.append(_linked_overlay(ref, path, fmt, new, made))
        elif found is not None and found.type not in PATH_POOLS + NO_NEW_VOLUMES:
            out.append(_clone_in_pool(ref, found, fmt, new, made))   # a logical (LVM) pool, say
        elif ref.kind == "file" or (found is not None and found.type in PATH_POOLS):
            dst = str(Path(path).parent / f"{new}-{ref.target}.{fmt}")
            _convert_new(path, fmt, dst, shared, made, part)
            if ref.kind == "volume" and found is not None:
                with libvirt_errors(f"refresh pool {found.pool.name()}"):
                    found.pool.refresh(0)
                point_disk(ref, "volume", fmt, pool=found.pool.name(), volume=Path(dst).name)
            else:
                point_disk(ref, "file", fmt, path=dst)
            out.append({"target": ref.target, "path": dst, "format": fmt, "backing": None})
        else:  # a device no pool can make another of (a raw block device, an iSCSI LUN): a file in 'default'
            dst = str(_default_pool_dir(conn, ref, path) / f"{new}-{ref.target}.{fmt}")
            _convert_new(path, fmt, dst, shared, made, part)
            point_disk(ref, "file", fmt, path=dst)
            out.append({"target": ref.target, "path": dst, "format": fmt, "backing": None, "copied_from": path})
    return out


def _convert_new(path: str, fmt: str, dst: str, shared: bool, made: Made, progress: Progress | None) -> None:
    if os.path.exists(dst):
        raise Conflict(f"disk file {dst} exists already", hint="remove it or pick another name for the clone")
    made.files.append(dst)
    convert(path, fmt, dst, fmt, shared=shared, progress=progress)


def _linked_overlay(ref: DiskRef, path: str, fmt: str, new: str, made: Made) -> dict[str, Any]:
    """A qcow2 overlay on the base the source's disk-only snapshot left (the source writes its own overlay)."""
    dst = str(Path(path).parent / f"{new}-{ref.target}.qcow2")
    if os.path.exists(dst):
        raise Conflict(f"disk file {dst} exists already", hint="remove it or pick another name for the clone")
    made.files.append(dst)
    base = snapshots.backing_chain(path, fmt)[1]
    snapshots.qemu_img("create", "-q", "-f", "qcow2", "-b", base["path"], "-F", base["format"], dst)
    point_disk(ref, "file", "qcow2", path=dst)
    return {"target": ref.target, "path": dst, "format": "qcow2", "backing": base["path"],
            "backing_format": base["format"]}


def _clone_in_pool(ref: DiskRef, found: Found, fmt: str, new: str, made: Made) -> dict[str, Any]:
    """A new volume in the source volume's own pool, filled by libvirt (logical, disk, rbd ... pools)."""
    pool, svol = found.pool, found.vol
    with libvirt_errors(f"read volume {svol.path()}"):
        capacity = svol.info()[1]
    name = f"{new}-{ref.target}"
    xml = etree.Element("volume")
    etree.SubElement(xml, "name").text = name
    etree.SubElement(xml, "capacity", unit="bytes").text = str(capacity)
    with libvirt_errors(f"copy disk {ref.target} to a new volume '{name}' in pool '{pool.name()}'"):
        vol = pool.createXMLFrom(etree.tostring(xml, encoding="unicode"), svol, 0)
    made.volumes.append(vol)
    if ref.kind == "volume":
        point_disk(ref, "volume", fmt, pool=pool.name(), volume=vol.name())
    else:
        point_disk(ref, "block", fmt, path=vol.path())
    return {"target": ref.target, "path": vol.path(), "format": fmt, "backing": None, "pool": pool.name()}


def _default_pool_dir(conn: libvirt.virConnect, ref: DiskRef, path: str) -> Path:
    why = f"disk {ref.target} ({path}) is copied into the 'default' pool (no pool can make another of it)"
    try:
        pool = conn.storagePoolLookupByName("default")
    except libvirt.libvirtError as err:
        raise InvalidState(f"{why}, but there is no pool 'default'",
                           hint="define one: `kvmkit pool define default --type dir --target DIR`") from err
    root = etree.fromstring(pool.XMLDesc(0).encode())
    if not pool.isActive() or root.get("type") not in PATH_POOLS:
        raise InvalidState(f"{why}, but that pool is not a running directory pool",
                           hint="`kvmkit pool start default`")
    return Path(root.findtext("target/path") or "/var/lib/libvirt/images")


def _rollback(conn: libvirt.virConnect, src: str, made: Made, linked_snap: str | None) -> None:
    for f in made.files:
        with contextlib.suppress(OSError):
            os.unlink(f)
    for vol in made.volumes:
        with contextlib.suppress(libvirt.libvirtError):
            vol.delete(0)
    if linked_snap:
        with contextlib.suppress(Exception):
            snapshots.delete_snapshot(conn, src, linked_snap)
    snapshots.refresh_pools(conn)
