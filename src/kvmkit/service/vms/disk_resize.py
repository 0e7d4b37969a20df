"""Resize a VM's disk through the VM (``kvmkit vm disk resize NAME TARGET SIZE``;
``POST /api/v1/vms/{name}/disks/{target}/resize``).

- A running (or paused) VM: libvirt's ``blockResize`` — QEMU grows the image it has open and tells the guest,
  which sees the new size at once (``/sys/block/vda/size``); the file system inside is the guest's to grow.
  Growing only: a running guest cannot give space back safely.
- A shut-off VM: the image itself is resized — through its pool (``virStorageVolResize``) when it is a pool
  volume, else ``qemu-img resize`` with its format given explicitly. Shrinking needs ``allow_shrink``
  (data past the new end is lost; shrink the file system inside first) and is only done here.

Refused, with nothing changed: a disk that is not a plain writable disk (CD-ROM, read-only, a host block
device), an image another VM also uses (as its disk or as a backing file: a linked clone would read changed
data), a template or the backing file of another volume, a qcow2 image with internal snapshots (QEMU cannot
resize those), a VM with a saved state (its memory image expects the old disk), and growth past the pool's
free space.
"""

from __future__ import annotations

import re
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain
from kvmkit.service.vms.storage_use import (
    _backing_users,
    _is_local,
    _other_users,
    disk_source,
    is_block_device,
    real_path,
)

_TARGET = re.compile(r"[a-z]{2,4}")
_SECTOR = 512


def _human(n: int) -> str:
    from kvmkit.service.storage.volumes import _human as human

    return human(n)


def _disk(dom: libvirt.virDomain, target: str, active: bool) -> etree._Element:
    if not _TARGET.fullmatch(target):
        raise InvalidInput(f"invalid disk target '{target}': give a target name like vda (see `kvmkit vm show`)")
    flags = 0 if active else libvirt.VIR_DOMAIN_XML_INACTIVE
    with libvirt_errors(f"reading the XML of VM {dom.name()}"):
        root = etree.fromstring(dom.XMLDesc(flags).encode())
    hits = root.xpath(f"./devices/disk[target/@dev='{target}']")
    if not hits:
        raise NotFound(f"VM {dom.name()} has no disk {target}",
                       hint=f"see its disks with `kvmkit vm show {dom.name()}`")
    return hits[0]  # type: ignore[no-any-return,index]


def _check_disk(conn: libvirt.virConnect, name: str, target: str, disk: etree._Element) -> tuple[str, str]:
    """(path, format) of a disk that may be resized."""
    if disk.get("device", "disk") != "disk":
        raise InvalidInput(f"{target} of VM {name} is a {disk.get('device')}, not a disk",
                           hint="only disks can be resized")
    if disk.find("readonly") is not None:
        raise InvalidInput(f"disk {target} of VM {name} is read-only", hint="only writable disks can be resized")
    path = disk_source(conn, disk)
    if not path:
        raise InvalidInput(f"disk {target} of VM {name} has no image on this host (a network disk or no medium)",
                           hint="resize it where it is stored")
    drv = disk.find("driver")
    fmt = drv.get("type") if drv is not None else None
    if fmt not in ("raw", "qcow2"):
        raise InvalidInput(f"disk {target} of VM {name} is a {fmt or 'unknown'} image; kvmkit resizes raw and qcow2",
                           hint="convert it with `kvmkit image convert`")
    if is_block_device(path):
        raise InvalidInput(f"disk {target} of VM {name} is the host block device {path}",
                           hint="grow the device itself (e.g. its logical volume); kvmkit resizes image files")
    return path, fmt


def _pool_volume(conn: libvirt.virConnect, path: str) -> tuple[libvirt.virStoragePool, libvirt.virStorageVol] | None:
    try:
        vol = conn.storageVolLookupByPath(path)
        return vol.storagePoolLookupByVolume(), vol
    except libvirt.libvirtError:
        return None


def _refuse_shared(conn: libvirt.virConnect, dom: libvirt.virDomain, target: str, path: str) -> None:
    """Refuse an image that something besides this disk depends on: another VM (as its disk, or below its disk
    in a backing chain: read from the qcow2 headers, since a shut-off VM's definition does not list it), a pool
    volume backed by it (a linked clone), or a template."""
    from kvmkit.service.storage.template_registry import template_for_path

    real = real_path(path)
    other = _other_users(conn, dom.UUIDString(), local=_is_local(conn)).get(real)
    if other:
        raise Conflict(f"the image of disk {target} ({path}) is also used by VM {other} "
                       "(as its disk or a backing file)",
                       hint="resize a VM's own image only; a linked clone reads its backing file as it is")
    clone = _backing_users(conn, {real}).get(real)
    if clone:
        raise Conflict(f"cannot resize disk {target} of VM {dom.name()}: its image is the backing file of {clone}",
                       hint="delete that linked clone first, or resize the clone's own image")
    tmpl = template_for_path(path) or template_for_path(real)
    if tmpl:
        raise Conflict(f"cannot resize disk {target} of VM {dom.name()}: its image is template '{tmpl}'",
                       hint=f"unmark it first: kvmkit template unmark {tmpl}")


def _refuse_snapshots(name: str, target: str, path: str, fmt: str) -> None:
    if fmt != "qcow2":
        return
    from kvmkit.images import qemu_img

    snaps = qemu_img.info(path, fmt).get("snapshots") or []
    if snaps:
        raise InvalidState(f"disk {target} of VM {name} has {len(snaps)} internal snapshot(s); QEMU cannot resize "
                           "a qcow2 image that has them", hint=f"delete the snapshots first (`kvmkit snapshot list "
                                                               f"{name}`)")


def resize_disk(conn: libvirt.virConnect, name: str, target: str, size: str | int, *,
                allow_shrink: bool = False) -> dict[str, Any]:
    """Resize disk ``target`` of VM ``name`` to ``size`` (live when it runs: growing only)."""
    from kvmkit.service.storage.volumes import _check_space, parse_size

    dom = domain(conn, name)
    new = -(-parse_size(size) // _SECTOR) * _SECTOR  # whole sectors (qcow2 needs them)
    with libvirt_errors(f"reading the state of VM {name}"):
        active = bool(dom.isActive())
        saved = bool(dom.isPersistent()) and not active and bool(dom.hasManagedSaveImage(0))
    disk = _disk(dom, target, active)
    path, fmt = _check_disk(conn, name, target, disk)
    where = _pool_volume(conn, path)
    if saved:
        raise InvalidState(f"VM {name} has a saved state (managed save) that expects disk {target} as it is",
                           hint=f"start the VM and resize it live, or discard the state: "
                                f"`kvmkit vm start {name}` first")
    if active:
        with libvirt_errors(f"reading the size of disk {target} of VM {name}"):
            old = int(dom.blockInfo(target)[0])
    elif where is not None:
        with libvirt_errors(f"reading volume {where[1].name()}"):
            old = int(where[1].info()[1])
    else:
        from kvmkit.images import qemu_img

        old = int(qemu_img.info(path, fmt)["virtual-size"])
    result: dict[str, Any] = {"name": name, "action": "disk resize", "target": target, "path": path, "format": fmt,
                              "old_capacity": old, "capacity": new, "live": active, "changed": new != old,
                              "pool": where[0].name() if where else None, "volume": where[1].name() if where else None,
                              "warning": None}
    if new == old:
        return result
    if new < old:
        if active:
            raise InvalidState(f"cannot shrink disk {target} of running VM {name} ({_human(old)} to {_human(new)})",
                               hint="a running guest cannot give space back: shut the VM down, shrink the file "
                                    "system inside first, then resize with allow_shrink (--allow-shrink)")
        if not allow_shrink:
            raise InvalidInput(f"{_human(new)} is smaller than disk {target} of VM {name} ({_human(old)})",
                               hint="shrinking destroys data past the new end; shrink the file system inside first "
                                    "and pass allow_shrink (--allow-shrink) if you mean it")
    _refuse_shared(conn, dom, target, path)
    _refuse_snapshots(name, target, path, fmt)
    if where is not None and new > old:
        _check_space(where[0], new - old, f"growing disk {target} of VM {name}")
    if active:
        with libvirt_errors(f"resizing disk {target} of VM {name}"):
            dom.blockResize(target, new, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
    elif where is not None:
        flags = libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK if new < old else 0
        with libvirt_errors(f"resizing volume {where[1].name()} (disk {target} of VM {name})"):
            where[1].resize(new, flags)
    else:
        from kvmkit.images import qemu_img

        qemu_img.resize(path, fmt, new, shrink=new < old)
    if new < old:
        result["warning"] = (f"disk {target} of VM {name} shrunk from {_human(old)} to {_human(new)}: data past the "
                             "new end is gone")
    return result
