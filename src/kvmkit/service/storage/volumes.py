"""Storage volumes: create, clone (full or linked), resize, wipe, delete, info, list.

Formats are always explicit: in the volume XML (<format type=.../>) and for backing stores (libvirt then
passes ``-F`` to qemu-img). Upload and download through libvirt streams live in streams.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.spec.common import parse_size_bytes

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FORMATS = ("qcow2", "raw")
def parse_size(value: str | int, what: str = "size") -> int:
    """Bytes from '512M', '1G', '1GiB', '10G', '4096B' or a bare number string (MiB, as everywhere in kvmkit,
    see :func:`kvmkit.spec.common.parse_size_bytes`). An ``int`` is taken as bytes (library callers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise InvalidInput(f"{what} must be positive, got '{value}'", hint="write e.g. 10G")
        return value
    return parse_size_bytes(str(value) if not isinstance(value, bool) else value, what)


def check_volume_name(name: str) -> str:
    """A volume name is a plain file name: no '/', no '..', no NUL, kvmkit's name pattern."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("volume name is empty", hint="give a name like disk0.qcow2")
    if "\x00" in name or "/" in name or ".." in name or not NAME_RE.match(name):
        raise InvalidInput(f"invalid volume name {name!r}",
                           hint="use letters, digits, '.', '_' and '-' (no '/', no '..'), at most 64 characters")
    return name


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown volume format '{fmt}'", hint=f"use one of: {', '.join(FORMATS)}")
    return fmt


def get_pool(conn: libvirt.virConnect, name: str, *, active: bool = True) -> libvirt.virStoragePool:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as err:
        raise NotFound(f"storage pool '{name}' not found", hint="list pools with `kvmkit pool list`") from err
    if active and not pool.isActive():
        raise InvalidState(f"storage pool '{name}' is not active", hint=f"start it: kvmkit pool start {name}")
    return pool


def get_volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol:
    if not name or "/" in name or "\x00" in name or name in (".", ".."):
        raise InvalidInput(f"invalid volume name {name!r}", hint="a volume name is a file name without '/'")
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        with libvirt_errors(f"refresh pool {pool.name()}"):
            pool.refresh(0)
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as err:
            raise NotFound(f"volume '{name}' not found in pool '{pool.name()}'",
                           hint=f"list volumes with `kvmkit volume list {pool.name()}`") from err


def _pool_target(pool: libvirt.virStoragePool) -> tuple[str, str]:
    root = etree.fromstring(pool.XMLDesc(0))
    return root.get("type") or "", root.findtext("target/path") or ""


def _check_new_name(pool: libvirt.virStoragePool, name: str) -> None:
    check_volume_name(name)
    ptype, target = _pool_target(pool)
    if ptype in ("dir", "fs", "netfs") and target:
        base = Path(target).resolve()
        path = (base / name).resolve()
        if path.parent != base:
            raise InvalidInput(f"volume name {name!r} leaves the pool directory {base}")
    try:
        pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return
    raise Conflict(f"volume '{name}' exists already in pool '{pool.name()}'",
                   hint="choose another name or delete it first")


def _check_space(pool: libvirt.virStoragePool, size: int, what: str) -> None:
    with libvirt_errors(f"refresh pool {pool.name()}"):
        pool.refresh(0)
    available = pool.info()[3]
    if size > available:
        raise InvalidInput(f"{what} of {_human(size)} is more than pool '{pool.name()}' has free ({_human(available)})",
                           hint="choose a smaller size or free space in the pool")


def _human(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _vol_xml(name: str, capacity: int, fmt: str, *, allocation: int | None = None,
             backing: tuple[str, str] | None = None, pool_type: str = "dir") -> str:
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    etree.SubElement(vol, "allocation", unit="bytes").text = str(capacity if allocation is None else allocation)
    if pool_type in ("dir", "fs", "netfs"):
        target = etree.SubElement(vol, "target")
        etree.SubElement(target, "format", type=fmt)
    if backing:
        bs = etree.SubElement(vol, "backingStore")
        etree.SubElement(bs, "path").text = backing[0]
        etree.SubElement(bs, "format", type=backing[1])
    return etree.tostring(vol, encoding="unicode")


def volume_format(vol: libvirt.virStorageVol) -> str:
    root = etree.fromstring(vol.XMLDesc(0))
    return root.find("target/format").get("type") if root.find("target/format") is not None else "raw"


def create_volume(conn: libvirt.virConnect, pool_name: str, name: str, size: int | str, *, fmt: str = "qcow2",
                  preallocation: str | None = None, backing: str | None = None) -> dict[str, Any]:
    """Create a volume (sparse unless ``preallocation='full'``); ``backing``: a volume of the same pool."""
    pool = get_pool(conn, pool_name)
    check_format(fmt)
    if preallocation not in (None, "off", "full"):
        raise InvalidInput(f"unknown preallocation '{preallocation}'",
                           hint="use --preallocation full (or leave it off)")
    _check_new_name(pool, name)
    size_b = parse_size(size)
    ptype, _ = _pool_target(pool)
    backing_ref = None
    if backing:
        if fmt != "qcow2":
            raise InvalidInput("only qcow2 volumes can have a backing volume", hint="use --format qcow2")
        bvol = get_volume(pool, backing)
        backing_ref = (bvol.path(), volume_format(bvol))
    full = preallocation == "full" or ptype == "logical"  # a sparse LV would be a thin snapshot LV
    _check_space(pool, size_b, f"volume '{name}'")
    if full and fmt == "qcow2" and ptype in ("dir", "fs", "netfs"):
        return _create_full_qcow2(conn, pool, name, size_b, backing_ref)
    xml = _vol_xml(name, size_b, fmt, allocation=size_b if full else 0, backing=backing_ref, pool_type=ptype)
    with libvirt_errors(f"create volume {name} in pool {pool_name}"):
        vol = pool.createXML(xml, 0)
    return volume_info(conn, pool_name, vol.name())


def _create_full_qcow2(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, size: int,
                       backing: tuple[str, str] | None) -> dict[str, Any]:
    """libvirt preallocates only qcow2 metadata; kvmkit runs qemu-img with preallocation=full itself."""
    from kvmkit.images import qemu_img

    _ptype, target = _pool_target(pool)
    path = Path(target).resolve() / name
    qemu_img.create(path, "qcow2", size, backing[0] if backing else None, backing[1] if backing else None,
                    preallocation="full")
    try:
        path.chmod(0o600)
        with libvirt_errors(f"refresh pool {pool.name()}"):
            pool.refresh(0)
        return volume_info(conn, pool.name(), name)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def clone_volume(conn: libvirt.virConnect, pool_name: str, src: str, new: str, *, linked: bool = False,
                 target_pool: str | None = None) -> dict[str, Any]:
    """Full copy (any format) or linked clone (a qcow2 overlay whose backing is ``src``, format explicit)."""
    pool = get_pool(conn, pool_name)
    dest = get_pool(conn, target_pool) if target_pool else pool
    svol = get_volume(pool, src)
    _check_new_name(dest, new)
    users = volume_users(conn, pool_name, svol, backing=False)
    if linked and users:  # the VM would write into the clone's backing file and corrupt the clone
        raise Conflict(f"volume '{src}' is a disk of VM {', '.join(users)}; a linked clone needs a base nobody writes",
                       hint="make a full copy (without --linked), or copy it once and mark the copy a template")
    running = [d for d in users if _is_running(conn, d)]
    if running:
        raise InvalidState(f"volume '{src}' is in use by running VM {', '.join(running)}; a copy would be torn",
                           hint="shut the VM down first (or snapshot it and copy the snapshot)")
    sfmt = volume_format(svol)
    _vtype, capacity, allocation = svol.info()
    ptype, _ = _pool_target(dest)
    if linked:
        xml = _vol_xml(new, capacity, "qcow2", allocation=0, backing=(svol.path(), sfmt), pool_type=ptype)
        with libvirt_errors(f"create linked clone {new} of {src}"):
            vol = dest.createXML(xml, 0)
    else:
        _check_space(dest, allocation, f"copy of '{src}'")
        xml = _vol_xml(new, capacity, sfmt, allocation=0, pool_type=ptype)
        with libvirt_errors(f"clone volume {src} to {new}"):
            vol = dest.createXMLFrom(xml, svol, 0)
    return volume_info(conn, dest.name(), vol.name())


def domains_using(conn: libvirt.virConnect, *, backing: bool = True) -> dict[str, list[str]]:
    """Map every disk source path (file, block device, pool/volume) to the domains whose XML names it.

    Reads each domain's XML once (inactive config and, for running ones, the live XML). With
    ``backing=False`` only the disks' top images count (what a VM writes), not their backing files.
    """
    path = "devices/disk//source" if backing else "devices/disk/source"
    users: dict[str, list[str]] = {}
    with libvirt_errors("list domains"):
        domains = conn.listAllDomains(0)
    for dom in domains:
        try:
            xmls = [dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)]
            if dom.isActive():
                xmls.append(dom.XMLDesc(0))
        except libvirt.libvirtError:  # undefined meanwhile (another client): it uses nothing any more
            continue
        for xml in xmls:
            # .//source also catches backing files libvirt lists in <backingStore> (e.g. a template)
            for src in etree.fromstring(xml).iterfind(path):
                keys = [src.get("file"), src.get("dev")]
                if src.get("pool") and src.get("volume"):
                    keys.append(f"{src.get('pool')}/{src.get('volume')}")
                for key in filter(None, keys):
                    names = users.setdefault(key, [])
                    if dom.name() not in names:
                        names.append(dom.name())
    return users


def volume_users(conn: libvirt.virConnect, pool_name: str, vol: libvirt.virStorageVol,
                 usage: dict[str, list[str]] | None = None, *, backing: bool = True) -> list[str]:
    """The VMs whose disks name this volume (``backing=False``: only as the image they write)."""
    usage = domains_using(conn, backing=backing) if usage is None else usage
    names = list(usage.get(vol.path(), []))
    for extra in usage.get(f"{pool_name}/{vol.name()}", []):
        if extra not in names:
            names.append(extra)
    return names


def _backing_dependents(pool: libvirt.virStoragePool, vol: libvirt.virStorageVol) -> list[str]:
    path = vol.path()
    out = []
    for other in pool.listAllVolumes(0):
        try:
            bs = etree.fromstring(other.XMLDesc(0)).findtext("backingStore/path")
        except libvirt.libvirtError:  # deleted meanwhile
            continue
        if bs and bs == path:
            out.append(other.name())
    return out


def refuse_if_base(pool: libvirt.virStoragePool, vol: libvirt.virStorageVol, action: str) -> None:
    """Refuse to ``action`` a volume that is a template or the backing file of another volume (its linked
    clones would read changed or vanished data)."""
    from kvmkit.service.storage.template_registry import template_for_path

    name = vol.name()
    tmpl = template_for_path(vol.path())
    if tmpl:
        raise Conflict(f"cannot {action} volume '{name}': it is template '{tmpl}'",
                       hint=f"unmark it first: kvmkit template unmark {tmpl}")
    deps = _backing_dependents(pool, vol)
    if deps:
        raise Conflict(f"cannot {action} volume '{name}': it is the backing file of {', '.join(deps)}",
                       hint="delete those linked clones first")


def delete_volume(conn: libvirt.virConnect, pool_name: str, name: str) -> dict[str, Any]:
    """Delete a volume; refused while a VM uses it, a template names it, or another volume is backed by it."""
    pool = get_pool(conn, pool_name)
    vol = get_volume(pool, name)
    users = volume_users(conn, pool_name, vol)
    if users:
        raise Conflict(f"volume '{name}' is in use by VM {', '.join(users)}",
                       hint="detach the disk or delete the VM first")
    refuse_if_base(pool, vol, "delete")
    path = vol.path()
    with libvirt_errors(f"delete volume {name}"):
        vol.delete(0)
    from kvmkit.service.storage import volume_marks

    volume_marks.clear(path)
    return {"pool": pool_name, "name": name, "path": path, "deleted": True}


def _is_running(conn: libvirt.virConnect, name: str) -> bool:
    try:
        return bool(conn.lookupByName(name).isActive())
    except libvirt.libvirtError:
        return False


def resize_volume(conn: libvirt.virConnect, pool_name: str, name: str, size: int | str, *,
                  allow_shrink: bool = False) -> dict[str, Any]:
    """Grow a volume; shrinking needs ``allow_shrink`` (data past the new end is lost) and returns a warning."""
    pool = get_pool(conn, pool_name)
    vol = get_volume(pool, name)
    new = parse_size(size)
    old = vol.info()[1]
    running = [d for d in volume_users(conn, pool_name, vol) if _is_running(conn, d)]
    if running:
        raise InvalidState(f"volume '{name}' is in use by running VM {', '.join(running)}",
                           hint="shut the VM down first (online resize is `kvmkit vm disk` territory)")
    result: dict[str, Any] = {"pool": pool_name, "name": name, "old_capacity": old, "capacity": new}
    if new == old:
        return result
    flags = 0
    if new < old:
        if not allow_shrink:
            raise InvalidInput(f"{_human(new)} is smaller than volume '{name}' ({_human(old)})",
                               hint="shrinking destroys data past the new end; pass --allow-shrink if you mean it")
        flags |= libvirt.VIR_STORAGE_VOL_RESIZE_SHRINK
        result["warning"] = (f"volume '{name}' shrunk from {_human(old)} to {_human(new)}: "
                             "data past the new end is gone; shrink the file system inside first")
    else:
        _check_space(pool, new - old, f"growing '{name}'")
    with libvirt_errors(f"resize volume {name}"):
        vol.resize(new, flags)
    return result


def wipe_volume(conn: libvirt.virConnect, pool_name: str, name: str) -> dict[str, Any]:
    """Erase a volume's data. qcow2 volumes are recreated empty with the same size and backing."""
    pool = get_pool(conn, pool_name)
    vol = get_volume(pool, name)
    users = volume_users(conn, pool_name, vol)
    if users:
        raise Conflict(f"volume '{name}' is in use by VM {', '.join(users)}", hint="detach it or delete the VM first")
    refuse_if_base(pool, vol, "wipe")
    fmt = volume_format(vol)
    path = vol.path()
    from kvmkit.service.storage import volume_marks

    kept = {k: v for k, v in volume_marks.marks(path).items() if k != "incomplete"}  # e.g. its owner
    if fmt == "qcow2":
        root = etree.fromstring(vol.XMLDesc(0))
        backing = root.findtext("backingStore/path")
        bfmt = root.find("backingStore/format")
        capacity = vol.info()[1]
        ptype, _ = _pool_target(pool)
        xml = _vol_xml(name, capacity, "qcow2", allocation=0, pool_type=ptype,
                       backing=(backing, bfmt.get("type") if bfmt is not None else "raw") if backing else None)
        with libvirt_errors(f"wipe volume {name}"):
            vol.delete(0)
            pool.createXML(xml, 0)
    else:
        with libvirt_errors(f"wipe volume {name}"):
            vol.wipe(0)
    volume_marks.clear(path)  # a wiped volume holds no half-uploaded image (and may be a new file)
    if kept:
        volume_marks.set_mark(path, **kept)
    return {"pool": pool_name, "name": name, "wiped": True, "format": fmt}


def volume_info(conn: libvirt.virConnect, pool_name: str, name: str) -> dict[str, Any]:
    """Capacity, allocation, format, path and backing chain of a volume."""
    pool = get_pool(conn, pool_name)
    vol = get_volume(pool, name)
    with libvirt_errors(f"volume {name}"):
        _vtype, capacity, allocation = vol.info()
        root = etree.fromstring(vol.XMLDesc(0))
    fmt = volume_format(vol)
    info: dict[str, Any] = {"pool": pool_name, "name": name, "path": vol.path(), "format": fmt,
                            "capacity": capacity, "allocation": allocation, "backing_chain": []}
    path = Path(vol.path())
    if path.is_file() and fmt in FORMATS:
        from kvmkit.images import qemu_img

        data = qemu_img.info(path, fmt, chain=True)
        info["backing_chain"] = [{"path": d.get("filename"), "format": d.get("format")}
                                 for d in data.get("backing_chain", [])]
    elif root.findtext("backingStore/path"):
        bfmt = root.find("backingStore/format")
        info["backing_chain"] = [{"path": root.findtext("backingStore/path"),
                                  "format": bfmt.get("type") if bfmt is not None else None}]
    from kvmkit.service.storage import volume_marks

    incomplete = volume_marks.marks(vol.path()).get("incomplete")
    if incomplete:  # an upload into it stopped in the middle (streams.py)
        info["incomplete"] = incomplete
    return info


def list_volumes(conn: libvirt.virConnect, pool_name: str) -> list[dict[str, Any]]:
    pool = get_pool(conn, pool_name)
    with libvirt_errors(f"list volumes of {pool_name}"):
        pool.refresh(0)
        vols = pool.listAllVolumes(0)
    from kvmkit.service.storage import volume_marks

    marks = volume_marks.all_marks()
    out = []
    for vol in sorted(vols, key=lambda v: v.name()):
        try:
            _t, capacity, allocation = vol.info()
            root = etree.fromstring(vol.XMLDesc(0))
        except libvirt.libvirtError:  # deleted by another client meanwhile
            continue
        fmt_el = root.find("target/format")
        fmt = (fmt_el.get("type") if fmt_el is not None else None) or "raw"
        row = {"name": vol.name(), "path": root.findtext("target/path"), "format": fmt, "capacity": capacity,
               "allocation": allocation, "backing": root.findtext("backingStore/path")}
        incomplete = (marks.get(row["path"] or "") or {}).get("incomplete")
        if incomplete:
            row["incomplete"] = incomplete
        out.append(row)
    return out
