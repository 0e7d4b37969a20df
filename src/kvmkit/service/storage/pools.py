"""Storage pools: dir, fs, netfs (NFS), logical (LVM) and iscsi, through libvirt's storage API."""

from __future__ import annotations

from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, KvmkitError
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.storage.volumes import NAME_RE, domains_using, get_pool, volume_users

POOL_TYPES = ("dir", "fs", "netfs", "logical", "iscsi")
_STATES = {libvirt.VIR_STORAGE_POOL_INACTIVE: "inactive", libvirt.VIR_STORAGE_POOL_BUILDING: "building",
           libvirt.VIR_STORAGE_POOL_RUNNING: "running", libvirt.VIR_STORAGE_POOL_DEGRADED: "degraded",
           libvirt.VIR_STORAGE_POOL_INACCESSIBLE: "inaccessible"}


def _need(value: str | None, flag: str, ptype: str) -> str:
    if not value:
        field = flag.split()[0].lstrip("-").replace("-", "_")
        raise InvalidInput(f"a {ptype} pool needs {flag} (API field {field})",
                           hint=f"add {flag} (see `kvmkit pool define --help`)")
    return value


def pool_xml(name: str, ptype: str, *, target: str | None = None, source_dev: str | None = None,
             source_host: str | None = None, source_path: str | None = None, source_name: str | None = None,
             source_format: str | None = None) -> str:
    """The libvirt <pool> XML for one of the supported types (built with lxml)."""
    if not NAME_RE.match(name or ""):
        raise InvalidInput(f"invalid pool name {name!r}", hint="use letters, digits, '.', '_' and '-' (max 64)")
    if ptype not in POOL_TYPES:
        raise InvalidInput(f"unknown pool type '{ptype}'", hint=f"use one of: {', '.join(POOL_TYPES)}")
    if target is not None and not target.startswith("/"):
        raise InvalidInput(f"--target {target} must be an absolute path", hint="e.g. --target /srv/vms")
    pool = etree.Element("pool", type=ptype)
    etree.SubElement(pool, "name").text = name
    source = etree.SubElement(pool, "source")
    if ptype == "dir":
        target = _need(target, "--target DIR", ptype)
    elif ptype == "fs":
        etree.SubElement(source, "device", path=_need(source_dev, "--source-dev DEV", ptype))
        etree.SubElement(source, "format", type=source_format or "ext4")
        target = _need(target, "--target DIR", ptype)
    elif ptype == "netfs":
        etree.SubElement(source, "host", name=_need(source_host, "--source-host H", ptype))
        etree.SubElement(source, "dir", path=_need(source_path, "--source-path P", ptype))
        etree.SubElement(source, "format", type=source_format or "nfs")
        target = _need(target, "--target DIR", ptype)
    elif ptype == "logical":
        vg = source_name or name
        etree.SubElement(source, "name").text = vg
        if source_dev:
            etree.SubElement(source, "device", path=source_dev)
        etree.SubElement(source, "format", type="lvm2")
        target = target or f"/dev/{vg}"
    elif ptype == "iscsi":
        etree.SubElement(source, "host", name=_need(source_host, "--source-host H", ptype))
        etree.SubElement(source, "device", path=_need(source_path or source_dev, "--source-path IQN", ptype))
        target = target or "/dev/disk/by-path"
    tgt = etree.SubElement(pool, "target")
    etree.SubElement(tgt, "path").text = target
    return etree.tostring(pool, encoding="unicode")


def define_pool(conn: libvirt.virConnect, name: str, ptype: str, **kwargs: Any) -> dict[str, Any]:
    """Define (not build, not start) a pool. kwargs: target, source_dev, source_host, source_path, source_name."""
    xml = pool_xml(name, ptype, **kwargs)
    try:
        conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        pass
    else:
        raise Conflict(f"storage pool '{name}' exists already", hint="choose another name or undefine it first")
    with libvirt_errors(f"define pool {name}"):
        conn.storagePoolDefineXML(xml, 0)
    return pool_info(conn, name)


def build_pool(conn: libvirt.virConnect, name: str, *, overwrite: bool = False) -> dict[str, Any]:
    """Make the pool's storage (mkdir, mkfs, vgcreate ...). ``overwrite`` lets it format a used device."""
    pool = get_pool(conn, name, active=False)
    ptype = etree.fromstring(pool.XMLDesc(0)).get("type")
    flags = 0
    if overwrite:
        flags = libvirt.VIR_STORAGE_POOL_BUILD_OVERWRITE
    elif ptype == "fs":  # mkfs only when the device holds no file system yet
        flags = libvirt.VIR_STORAGE_POOL_BUILD_NO_OVERWRITE
    with libvirt_errors(f"build pool {name}"):
        pool.build(flags)
    return pool_info(conn, name)


def start_pool(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    pool = get_pool(conn, name, active=False)
    if not pool.isActive():
        with libvirt_errors(f"start pool {name}"):
            pool.create(0)
    return pool_info(conn, name)


def stop_pool(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    pool = get_pool(conn, name, active=False)
    if pool.isActive():
        with libvirt_errors(f"stop pool {name}"):
            pool.destroy()
    return pool_info(conn, name)


def set_autostart(conn: libvirt.virConnect, name: str, on: bool = True) -> dict[str, Any]:
    pool = get_pool(conn, name, active=False)
    with libvirt_errors(f"autostart pool {name}"):
        pool.setAutostart(1 if on else 0)
    return pool_info(conn, name)


def refresh_pool(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    pool = get_pool(conn, name)
    with libvirt_errors(f"refresh pool {name}"):
        pool.refresh(0)
    return pool_info(conn, name)


def _refuse_if_in_use(conn: libvirt.virConnect, pool: libvirt.virStoragePool, action: str) -> None:
    if not pool.isActive():
        return
    usage = domains_using(conn)
    with libvirt_errors(f"list volumes of {pool.name()}"):
        pool.refresh(0)
        vols = pool.listAllVolumes(0)
    busy = [f"{v.name()} (VM {', '.join(u)})" for v in vols if (u := volume_users(conn, pool.name(), v, usage))]
    if busy:
        raise Conflict(f"cannot {action} pool '{pool.name()}': volumes in use: {'; '.join(busy)}",
                       hint="detach those disks or delete the VMs first")


def delete_pool(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Delete the pool's storage (rmdir, vgremove ...). The pool must be stopped; refused while VMs use it."""
    pool = get_pool(conn, name, active=False)
    if pool.isActive():
        _refuse_if_in_use(conn, pool, "delete")
        raise InvalidState(f"pool '{name}' is running", hint=f"stop it first: kvmkit pool stop {name}")
    target = etree.fromstring(pool.XMLDesc(0)).findtext("target/path")
    if target:  # stopped: its volumes cannot be listed, so look for VM disks below its target
        base = target.rstrip("/") + "/"
        busy = sorted({f"{path} (VM {', '.join(doms)})" for path, doms in domains_using(conn).items()
                       if path.startswith(base)})
        if busy:
            raise Conflict(f"cannot delete pool '{name}': VM disks live in it: {'; '.join(busy)}",
                           hint="detach those disks or delete the VMs first")
    with libvirt_errors(f"delete pool {name}"):
        pool.delete(0)
    return {"name": name, "deleted": True}


def undefine_pool(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    pool = get_pool(conn, name, active=False)
    if pool.isActive():
        raise InvalidState(f"pool '{name}' is running", hint=f"stop it first: kvmkit pool stop {name}")
    with libvirt_errors(f"undefine pool {name}"):
        pool.undefine()
    return {"name": name, "undefined": True}


def rollback_define(conn: libvirt.virConnect, name: str) -> None:
    """Undo `define --build --start` after a later step failed: stop and undefine (storage is kept)."""
    try:
        pool = conn.storagePoolLookupByName(name)
        if pool.isActive():
            pool.destroy()
        pool.undefine()
    except libvirt.libvirtError:
        pass


def pool_info(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    pool = get_pool(conn, name, active=False)
    return _describe(pool)


def _describe(pool: libvirt.virStoragePool) -> dict[str, Any]:
    with libvirt_errors(f"pool {pool.name()}"):
        state, capacity, allocation, available = pool.info()
        root = etree.fromstring(pool.XMLDesc(0))
        autostart = bool(pool.autostart())
        persistent = bool(pool.isPersistent())
        nvols = pool.numOfVolumes() if pool.isActive() else None
    src = root.find("source")
    source: dict[str, str] = {}
    if src is not None:
        for tag, attr in (("device", "path"), ("host", "name"), ("dir", "path"), ("format", "type")):
            el = src.find(tag)
            if el is not None and el.get(attr):
                source[tag] = el.get(attr) or ""
        if src.findtext("name"):
            source["name"] = src.findtext("name") or ""
    return {"name": pool.name(), "uuid": pool.UUIDString(), "type": root.get("type"),
            "state": _STATES.get(state, str(state)), "autostart": autostart, "persistent": persistent,
            "target": root.findtext("target/path"), "source": source, "capacity": capacity,
            "allocation": allocation, "available": available, "volumes": nvols}


def list_pools(conn: libvirt.virConnect) -> list[dict[str, Any]]:
    with libvirt_errors("list pools"):
        pools = conn.listAllStoragePools(0)
    out = []
    for pool in sorted(pools, key=lambda p: p.name()):
        try:
            out.append(_describe(pool))
        except KvmkitError:  # undefined by another client meanwhile
            continue
    return out
