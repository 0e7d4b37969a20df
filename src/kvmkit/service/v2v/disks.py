"""The disks of an import: checked as untrusted images, measured against the pool's free space, converted
into new qcow2 volumes of the pool.

Each disk is opened by qemu-img with its format given (read from its header) and its backing link cut
(:func:`kvmkit.images.qemu_img.inspect_untrusted`): one naming a backing file, an external data file or
VMDK extents in other files is refused. The disks' virtual sizes must fit in the pool's free space (as for
``volume create``: a sparse copy that could not grow to its size would fill the pool while the guest runs);
``qemu-img measure`` says how much of it the copy needs at once. Each volume is created by libvirt first (so
it is the pool's from the start) and ``qemu-img convert -f FMT -O qcow2 -n`` writes into it; a failed
conversion deletes its volume.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

from kvmkit.errors import InvalidInput
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.images import qemu_img
from kvmkit.service.storage.volumes import _check_new_name, _human, _pool_target, _vol_xml, get_pool
from kvmkit.service.v2v.package import DiskSource, Package

FILE_POOLS = ("dir", "fs", "netfs")
HEADROOM = 64 * 1024**2   # kernel/initrd copies, qcow2 metadata growth while converting


@dataclass
class CheckedDisk:
    source: DiskSource
    virtual_size: int
    required: int          # bytes the qcow2 copy needs (qemu-img measure)
    info: dict[str, Any]


@dataclass
class PlacedDisk:
    checked: CheckedDisk
    volume: str
    path: str


def check_disks(pkg: Package) -> list[CheckedDisk]:
    out = []
    for disk in pkg.disks:
        info = qemu_img.inspect_untrusted(disk.path, disk.format, formats=qemu_img.READ_FORMATS,
                                          offset=disk.offset, size=disk.span,
                                          label=disk.label)
        virtual = int(info["virtual-size"])
        declared = disk.ovf.capacity if disk.ovf else None
        if declared and virtual < declared:
            raise InvalidInput(f"{disk.label} holds {virtual} bytes but the descriptor gives it {declared}",
                               hint="the package is damaged or mislabelled; export the VM again")
        need = qemu_img.measure(disk.qemu_source(), disk.format, "qcow2")["required"]
        out.append(CheckedDisk(disk, virtual, need, info))
    return out


def pool_for_import(conn: libvirt.virConnect, pool_name: str) -> libvirt.virStoragePool:
    pool = get_pool(conn, pool_name)
    ptype, target = _pool_target(pool)
    if ptype not in FILE_POOLS or not target:
        raise InvalidInput(f"pool '{pool_name}' is a {ptype} pool; an import writes qcow2 files into a directory pool",
                           hint="give --pool of type dir, fs or netfs (kvmkit pool list)")
    return pool


def check_space(pool: libvirt.virStoragePool, disks: list[CheckedDisk]) -> int:
    """The bytes the import's disks may grow to; InvalidInput when the pool has less free."""
    need = sum(d.virtual_size for d in disks) + HEADROOM
    with libvirt_errors(f"refresh pool {pool.name()}"):
        pool.refresh(0)
    free = pool.info()[3]
    if need > free:
        biggest = max(disks, key=lambda d: d.virtual_size)
        raise InvalidInput(f"the import's disks are {_human(need)} but pool '{pool.name()}' has {_human(free)} free "
                           f"({biggest.source.label} alone is {_human(biggest.virtual_size)}; its data needs "
                           f"{_human(biggest.required)} now)",
                           hint="free space in the pool or import into another one (--pool NAME)")
    return need


def volume_names(pool: libvirt.virStoragePool, name: str, count: int) -> list[str]:
    names = [f"{name}-disk{i}.qcow2" for i in range(count)]
    for vol in names:
        _check_new_name(pool, vol)  # Conflict when it exists; stays inside the pool directory
    return names


def convert_into(pool: libvirt.virStoragePool, disk: CheckedDisk, volume: str, undo: list[Callable[[], None]],
                 progress: Callable[[float], None] | None = None) -> PlacedDisk:
    """A new qcow2 volume ``volume`` holding ``disk``; its deletion is pushed on ``undo`` once it exists."""
    ptype, _ = _pool_target(pool)
    with libvirt_errors(f"create volume {volume} in pool {pool.name()}"):
        vol = pool.createXML(_vol_xml(volume, disk.virtual_size, "qcow2", allocation=0, pool_type=ptype), 0)
    undo.append(lambda: vol.delete(0))
    path = vol.path()
    qemu_img.convert(disk.source.qemu_source(), path, disk.source.format, "qcow2", progress=progress, existing=True)
    with libvirt_errors(f"refresh pool {pool.name()}"):
        pool.refresh(0)
    return PlacedDisk(disk, volume, path)
