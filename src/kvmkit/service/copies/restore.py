"""Restore a VM from a kvmkit backup directory (see service/copies/backup.py).

Every file's sha256 is checked against the manifest before anything is created; then each disk is
copied into a storage pool (``default`` unless told otherwise) in its original format, the definition is
pointed at the copies and defined. With ``name`` the VM gets that name, a new UUID, new MACs and its own
serial log. If any step fails, the volumes made so far are removed and nothing is defined.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.images.plain_copy import copy_file
from kvmkit.service.copies import snapshots
from kvmkit.service.copies.backup import read_manifest, sha256
from kvmkit.service.copies.clone import Progress, convert, new_macs, rename_identity, scaled
from kvmkit.xml.chardevs import keep_log_history
from kvmkit.xml.osboot import nvram_path

PATH_POOLS = ("dir", "fs", "netfs")
NVRAM_DIR = Path("/var/lib/libvirt/qemu/nvram")  # libvirt's default (qemu.conf nvram_dir)


def verify(backup_dir: str | Path, manifest: dict[str, Any] | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Check every file of a backup against its manifest's sha256; raise InvalidInput naming a bad one."""
    base = Path(backup_dir)
    manifest = manifest or read_manifest(base)
    sums: dict[str, str] = manifest["sha256"]
    needed = {manifest["domain_xml"], *(d["file"] for d in manifest["disks"])}
    if manifest.get("nvram"):
        needed.add(manifest["nvram"])
    missing = needed - set(sums)
    if missing:
        raise InvalidInput(f"the manifest of {base} has no checksum for {', '.join(sorted(missing))}",
                           hint="the backup is damaged; use another backup")
    for i, (file, want) in enumerate(sorted(sums.items())):
        path = base / file
        if not path.is_file():
            raise InvalidInput(f"backup file {path} is missing", hint="the backup is incomplete; use another backup")
        got = sha256(path)
        if got != want:
            raise InvalidInput(f"backup file {path} is corrupt: sha256 {got[:16]}... does not match the manifest's "
                               f"{want[:16]}...", hint="nothing was restored; use another (intact) backup")
        if progress:
            progress(100.0 * (i + 1) / len(sums))
    return manifest


def _pool_dir(conn: libvirt.virConnect, pool_name: str) -> tuple[libvirt.virStoragePool, Path]:
    try:
        pool = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError as err:
        raise NotFound(f"storage pool '{pool_name}' not found", hint="`kvmkit pool list` shows the pools") from err
    if not pool.isActive():
        raise InvalidState(f"storage pool '{pool_name}' is not active", hint=f"`kvmkit pool start {pool_name}`")
    root = etree.fromstring(pool.XMLDesc(0).encode())
    if root.get("type") not in PATH_POOLS:
        raise InvalidInput(f"pool '{pool_name}' is a {root.get('type')} pool: restore writes into dir, fs or netfs "
                           "pools", hint="pick such a pool with --pool")
    return pool, Path(root.findtext("target/path") or "")


def restore_vm(conn: libvirt.virConnect, backup_dir: str | Path, *, name: str | None = None,
               pool: str | None = None, progress: Progress | None = None) -> dict[str, Any]:
    """Verify, copy the disks into ``pool`` and define the VM (as ``name`` when given); return a summary."""
    base = Path(backup_dir).resolve()
    manifest = verify(base, progress=scaled(progress, 0, 30))
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring((base / manifest["domain_xml"]).read_bytes(), parser)
    except etree.XMLSyntaxError as err:
        raise InvalidInput(f"{manifest['domain_xml']} in {base} is not valid XML: {err}") from err
    old = root.findtext("name") or manifest["vm"]
    new = snapshots.check_name(name or old, "VM name")
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(new)
        raise Conflict(f"a VM named '{new}' exists already",
                       hint="restore under another name with --name NEW, or delete the existing VM first")
    keep_log_history(root)  # a definition saved without append='on' would truncate the VM's serial log
    renamed = new != old
    if renamed:
        rename_identity(root, old, new)
        macs = new_macs(conn, root)
    else:
        macs = _keep_identity(conn, root)
    pool_obj, pool_dir = _pool_dir(conn, pool or "default")
    by_target = {d.find("target").get("dev"): d for d in root.iterfind("devices/disk") if d.find("target") is not None}
    plan = []
    for entry in manifest["disks"]:
        disk = by_target.get(entry["target"])
        if disk is None:
            raise InvalidInput(f"backup disk {entry['target']} is not in {manifest['domain_xml']}",
                               hint="the backup is inconsistent; use another backup")
        fmt = entry.get("original_format") if entry.get("original_format") in ("qcow2", "raw") else "qcow2"
        dst = pool_dir / f"{new}-{entry['target']}.{fmt}"
        if dst.exists():
            raise Conflict(f"{dst} exists already in pool '{pool_obj.name()}'",
                           hint="remove it, restore under another --name, or pick another --pool")
        plan.append((entry, disk, fmt, dst))
    nvram_dst = nvram_path(root) if manifest.get("nvram") else None  # the renamed VM's own file, if renamed
    if nvram_dst:
        _check_nvram_path(conn, nvram_dst)
    if nvram_dst and os.path.exists(nvram_dst):
        raise Conflict(f"NVRAM file {nvram_dst} exists already",
                       hint="restore under another name with --name NEW, or remove the stale file")
    made: list[Path] = []
    try:
        if nvram_dst:
            made.append(Path(nvram_dst))
            copy_file(base / manifest["nvram"], nvram_dst, metadata=False)
        count = max(len(plan), 1)
        for i, (entry, disk, fmt, dst) in enumerate(plan):
            made.append(dst)
            convert(str(base / entry["file"]), "qcow2", str(dst), fmt,
                    progress=scaled(progress, 30 + 70 * i / count, 70 / count))
            disk.set("type", "file")
            src = disk.find("source")
            if src is None:
                src = etree.SubElement(disk, "source")
            src.attrib.clear()
            src.set("file", str(dst))
            driver = disk.find("driver")
            if driver is None:
                driver = etree.Element("driver", name="qemu")
                disk.insert(0, driver)
            driver.set("type", fmt)
            for bs in disk.findall("backingStore"):
                disk.remove(bs)
        with libvirt_errors(f"define restored VM {new}"):
            dom = conn.defineXML(etree.tostring(root, encoding="unicode"))
    except BaseException:
        for f in made:
            with contextlib.suppress(OSError):
                os.unlink(f)
        with contextlib.suppress(libvirt.libvirtError):
            pool_obj.refresh(0)
        raise
    with contextlib.suppress(libvirt.libvirtError):
        pool_obj.refresh(0)
    if progress:
        progress(100.0)
    return {"name": new, "uuid": dom.UUIDString(), "from": str(base), "source_vm": manifest["vm"],
            "pool": pool_obj.name(), "disks": [{"target": e["target"], "path": str(d), "format": f}
                                               for e, _, f, d in plan],
            "macs": macs, "renamed": renamed}


def _check_nvram_path(conn: libvirt.virConnect, path: str) -> None:
    """The restore writes the NVRAM file as root where the backup's domain XML says. A backup is data from
    outside, so that place must be one kvmkit or libvirt keeps VM files in: libvirt's NVRAM directory, the
    directory of a storage pool, or kvmkit's data directory; never anywhere a forged backup names (a new
    file in /etc/cron.d would run as root)."""
    from kvmkit.config import data_dir

    real = Path(os.path.realpath(path))
    trusted = {NVRAM_DIR, *_pool_dirs(conn)}
    data = Path(os.path.realpath(data_dir()))
    if os.path.isabs(path) and (real.parent in trusted or data in real.parents):
        return
    raise InvalidInput(f"the backup's domain XML puts the NVRAM file at {path}: kvmkit restores NVRAM files only "
                       f"into {NVRAM_DIR}, a storage pool's directory or {data}",
                       hint="check where this backup came from; if you trust it, point <nvram> in its domain.xml "
                            f"into {NVRAM_DIR} and update that file's sha256 in manifest.json")


def _pool_dirs(conn: libvirt.virConnect) -> set[Path]:
    dirs = set()
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            root = etree.fromstring(pool.XMLDesc(0).encode())
            if root.get("type") in PATH_POOLS and root.findtext("target/path"):
                dirs.add(Path(os.path.realpath(root.findtext("target/path") or "/")))
    return dirs


def _keep_identity(conn: libvirt.virConnect, root: etree._Element) -> list[str]:
    """Restoring under the original name: keep UUID and MACs unless another VM uses them now."""
    uuid = root.findtext("uuid")
    if uuid:
        with contextlib.suppress(libvirt.libvirtError):
            other = conn.lookupByUUIDString(uuid)
            raise Conflict(f"VM '{other.name()}' has this backup's UUID {uuid}",
                           hint="restore under a new name with --name NEW (it gets a new UUID and MACs)")
    from kvmkit.service.vms.macs import ensure_mac_free

    macs = [m.get("address") for m in root.iterfind("devices/interface/mac") if m.get("address")]
    for mac in macs:
        try:
            ensure_mac_free(conn, mac)
        except Conflict as err:
            raise Conflict(err.message, hint="restore under a new name with --name NEW (it gets new MACs)") from err
    return macs

