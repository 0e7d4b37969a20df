"""The disks of a migration that copies storage: created on the destination first (same pool directory, same
name, format and size: libvirt's copy-storage needs the file at the same path there), copied (a live
migration's QEMU mirrors them itself; an offline one streams each file through libvirt), and afterwards
removed on the side that no longer needs them (the source after a success, the destination after a failure).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import libvirt
from lxml import etree

from kvmkit.service.migration.files import active_pools, dir_pool
from kvmkit.service.migration.model import DiskPlan
from kvmkit.xml.migration import volume_xml

CHUNK = 4 * 2**20


def create_dest_volumes(conn: libvirt.virConnect, disks: list[DiskPlan], made: list[str], *,
                        empty: bool = False) -> None:
    """Create every disk to copy in its destination pool; ``made`` collects the paths (for the undo).

    A live copy gets an image of the disk's format and size for QEMU to mirror into; an offline one
    (``empty``) an empty file that the stream fills with the source file's bytes (kvmkit's offline copy)."""
    for disk in disks:
        assert disk.dest_pool is not None
        pool = conn.storagePoolLookupByName(disk.dest_pool)
        capacity, fmt = (0, "raw") if empty else (int(disk.capacity or 0), disk.format)
        vol = pool.createXML(volume_xml(os.path.basename(disk.path), capacity, fmt), 0)
        made.append(vol.path())
        if os.path.normpath(vol.path()) != os.path.normpath(disk.path):
            raise libvirt.libvirtError(f"pool {disk.dest_pool} made {vol.path()}, not {disk.path}")


def paths_in_use(conn: libvirt.virConnect) -> set[str]:
    """Every file a domain of this host names (disks), running or not."""
    used: set[str] = set()
    for dom in conn.listAllDomains(0):
        with contextlib.suppress(libvirt.libvirtError):
            root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
            for source in root.findall("devices/disk/source"):
                path = source.get("file") or source.get("dev")
                if path:
                    used.add(os.path.normpath(path))
    return used


def delete_files(conn: libvirt.virConnect, paths: list[str]) -> tuple[list[str], list[str]]:
    """Delete the volumes at ``paths`` that no domain of the host uses: (deleted, kept with the reason)."""
    deleted: list[str] = []
    kept: list[str] = []
    if not paths:
        return deleted, kept
    used = paths_in_use(conn)
    pools = active_pools(conn)
    for path in paths:
        if os.path.normpath(path) in used:
            kept.append(f"{path}: a VM of this host uses it")
            continue
        with dir_pool(conn, os.path.dirname(path), pools) as (pool, _name, error):
            if pool is None:
                kept.append(f"{path}: {error}")
                continue
            try:
                pool.storageVolLookupByName(os.path.basename(path)).delete(0)
                deleted.append(path)
            except libvirt.libvirtError as err:
                kept.append(f"{path}: {err.get_error_message()}")
    return deleted, kept


def copy_offline(src: libvirt.virConnect, dst: libvirt.virConnect, disks: list[DiskPlan],
                 progress: Callable[[int, int], None] | None = None,
                 cancelled: Callable[[], bool] | None = None) -> int:
    """Stream each disk's file from the source to the volume made for it on the destination (holes stay
    holes: libvirt's sparse streams). Returns the bytes sent; raises on a cancel between chunks."""
    from kvmkit.service.tasks.runner import Cancelled

    total = sum(int(d.allocation or d.capacity or 0) for d in disks)
    sent = [0]
    src_pools, dst_pools = active_pools(src), active_pools(dst)
    sparse = libvirt.VIR_STORAGE_VOL_DOWNLOAD_SPARSE_STREAM
    for disk in disks:
        with dir_pool(src, os.path.dirname(disk.path), src_pools) as (spool, _n, err):
            if spool is None:
                raise libvirt.libvirtError(f"host cannot list {os.path.dirname(disk.path)}: {err}")
            svol = spool.storageVolLookupByName(os.path.basename(disk.path))
            dpool = dst.storagePoolLookupByName(disk.dest_pool or dst_pools[os.path.dirname(disk.path)][0])
            dvol = dpool.storageVolLookupByName(os.path.basename(disk.path))
            down, up = src.newStream(0), dst.newStream(0)
            svol.download(down, 0, 0, sparse)
            dvol.upload(up, 0, 0, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM)
            try:
                _pipe(down, up, sent, total, progress, cancelled)
                up.finish()
                down.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    up.abort()
                with contextlib.suppress(libvirt.libvirtError):
                    down.abort()
                raise
    if cancelled is not None and cancelled():
        raise Cancelled("cancelled on request")
    return sent[0]


def _pipe(down: libvirt.virStream, up: libvirt.virStream, sent: list[int], total: int,
          progress: Callable[[int, int], None] | None, cancelled: Callable[[], bool] | None) -> None:
    from kvmkit.service.tasks.runner import Cancelled

    def data(_stream: Any, chunk: bytes, _opaque: Any) -> int:
        if cancelled is not None and cancelled():
            raise Cancelled("cancelled on request")
        view = memoryview(chunk)
        while view:
            n = up.send(bytes(view))
            view = view[n:]
        sent[0] += len(chunk)
        if progress is not None:
            progress(sent[0], total)
        return 0

    def hole(_stream: Any, length: int, _opaque: Any) -> int:
        up.sendHole(length, 0)
        return 0

    down.sparseRecvAll(data, hole, None)
