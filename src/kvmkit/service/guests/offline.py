"""A VM's guest file systems, offline: inspect, ls, cat, df, copy-in, copy-out (libguestfs, guestfs.py).

The VM must be shut off: its writable disks (the cloud-init seed, CD-ROMs and shareable disks are left out)
are opened by libguestfs, read-only for everything but copy-in. A running (or paused) VM is refused unless
``readonly``: then its current disk files are read through a throw-away overlay, without locking, so what
the guest has not written back yet is missing. copy-in also refuses a disk that anything else depends on:
another VM's disk (shared), the backing file of another VM's disk or of a pool volume (a linked clone's
base), a kvmkit template, or a VM with a saved memory state (writing under it would corrupt the guest).
Guest paths are absolute; everything the guest holds is handed over as it is (names, bytes, tar).
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import re
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.copies.snapshots import disks as writable_disks
from kvmkit.service.guests import guestfs
from kvmkit.service.vms.domains import domain, state_of

_FTYPE = {0o040000: "directory", 0o100000: "file", 0o120000: "symlink", 0o020000: "char", 0o060000: "block",
          0o010000: "fifo", 0o140000: "socket"}
_LS_TYPE = {"d": "directory", "-": "file", "l": "symlink", "c": "char", "b": "block", "p": "fifo", "s": "socket"}


def guest_path(path: str, what: str = "guest path") -> str:
    """An absolute path inside the guest, normalised ('/etc//x/' -> '/etc/x')."""
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "\0\n\r") \
            or len(path) > 4096:
        raise InvalidInput(f"invalid {what} {path!r}: give an absolute path inside the guest, e.g. /etc/hostname")
    return posixpath.normpath(path).replace("//", "/")


def vm_disks(conn: libvirt.virConnect, name: str, *, readonly: bool, write: bool = False) -> list[dict[str, Any]]:
    """The disks libguestfs opens for VM ``name``, after the state checks (see the module's doc)."""
    dom = domain(conn, name)
    with libvirt_errors(f"reading VM {name}"):
        active = bool(dom.isActive())
        xml = dom.XMLDesc(0)
    if write and (active or readonly):
        raise InvalidState(f"cannot copy into VM {name}: it is {state_of(dom)}" if active else
                           "copy-in writes into the disks: it cannot be --readonly",
                           hint=f"shut it down first (`kvmkit vm shutdown {name}`)")
    if active and not readonly:
        raise InvalidState(f"VM {name} is {state_of(dom)}: guest disk commands work on a shut-off VM",
                           hint=f"shut it down (`kvmkit vm shutdown {name}`), or pass --readonly to read its disks "
                                "as they are now (what the guest has not written back yet is missing)")
    from kvmkit.service.net.networks import is_local

    if not is_local(conn):
        raise InvalidState(f"VM {name} is on {conn.getURI()}: guest disk commands open the disk files with "
                           "libguestfs on this host", hint="run kvmkit on the VM's host (or kvmkit serve there)")
    found = writable_disks(xml, conn)
    if not found:
        raise InvalidState(f"VM {name} has no writable disk to open", hint="see its disks with `kvmkit vm show`")
    for d in found:
        if not d["path"] or d["type"] not in ("file", "volume", "block", None):
            raise InvalidState(f"disk {d['target']} of VM {name} has no host path libguestfs can open")
        if not os.path.exists(d["path"]):
            raise InvalidState(f"disk {d['target']} of VM {name} is missing: {d['path']} does not exist",
                               hint="fix the VM's disk (`kvmkit vm show` lists its disks)")
    if write:
        _check_writable(conn, dom, found)
    return found


def _check_writable(conn: libvirt.virConnect, dom: libvirt.virDomain, found: list[dict[str, Any]]) -> None:
    from kvmkit.images.qcow2_header import backing_files
    from kvmkit.service.storage.template_registry import template_for_path
    from kvmkit.service.vms.storage_use import disk_source, domain_xmls

    name = dom.name()
    if dom.hasManagedSaveImage(0):
        raise InvalidState(f"VM {name} has a saved memory state (managed save): writing its disks now would "
                           "corrupt the guest when it resumes", hint=f"start it and shut it down: kvmkit vm start "
                                                                     f"{name}; kvmkit vm shutdown {name}")
    mine = {os.path.realpath(d["path"]): d for d in found}
    for path, d in mine.items():
        template = template_for_path(d["path"]) or template_for_path(path)
        if template:
            raise InvalidState(f"disk {d['target']} of VM {name} is template '{template}': templates are never "
                               "written to (the VMs made from it would change)",
                               hint=f"unmark it first (`kvmkit template unmark {template}`) if nothing uses it")
    for other in conn.listAllDomains():
        if other.UUIDString() == dom.UUIDString():
            continue
        try:
            flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if other.isActive() else 0) | \
                (libvirt.VIR_DOMAIN_AFFECT_CONFIG if other.isPersistent() else 0)
            roots = domain_xmls(other, flags)
        except libvirt.libvirtError:
            continue  # it went away while we looked
        for root in roots:
            for disk in root.iterfind("devices/disk"):
                src = disk_source(conn, disk)
                if not src:
                    continue
                real = os.path.realpath(src)
                if real in mine:
                    raise Conflict(f"disk {mine[real]['target']} of VM {name} ({src}) is also a disk of VM "
                                   f"'{other.name()}'", hint="detach it there first; kvmkit writes only into disks "
                                                             "that one VM uses")
                below = [b.get("file") for b in disk.iterfind(".//backingStore/source") if b.get("file")]
                drv = disk.find("driver")
                if drv is not None and drv.get("type") == "qcow2" and os.path.exists(src):
                    below += backing_files(src) or []
                for back in below:
                    if os.path.realpath(back) in mine:
                        raise InvalidState(
                            f"cannot write into VM {name}'s disk {back}: VM '{other.name()}' uses it as a backing "
                            "file (a linked clone or a template's VM); writing would corrupt that VM",
                            hint=f"delete '{other.name()}' first, or make it a full copy (`kvmkit vm clone "
                                 f"{other.name()} NEW` and delete the linked one)")
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        try:
            vols = pool.listAllVolumes()
        except libvirt.libvirtError:
            continue
        for vol in vols:
            try:
                back = etree.fromstring(vol.XMLDesc(0).encode()).findtext("backingStore/path")
                if back and os.path.realpath(back) in mine and os.path.realpath(vol.path()) not in mine:
                    raise InvalidState(f"cannot write into VM {name}'s disk {back}: volume {pool.name()}/"
                                       f"{vol.name()} uses it as its backing file (a linked clone)",
                                       hint=f"delete that volume first (`kvmkit volume delete {pool.name()} "
                                            f"{vol.name()}`)")
            except libvirt.libvirtError:
                continue


# --- reading -------------------------------------------------------------------------------------

def inspect(conn: libvirt.virConnect, name: str, *, readonly: bool = False) -> dict[str, Any]:
    """The guest's operating system(s) as libguestfs inspection sees them (virt-inspector)."""
    disks = vm_disks(conn, name, readonly=readonly)
    out = guestfs.run("virt-inspector", ["--no-applications", "--no-icon", *guestfs.drive_args(disks)])
    root = etree.fromstring(out)
    systems = []
    for osel in root.iterfind("operatingsystem"):
        item: dict[str, Any] = {el.tag: el.text for el in osel if len(el) == 0 and isinstance(el.tag, str)}
        item["mountpoints"] = {m.text: m.get("dev") for m in osel.iterfind("mountpoints/mountpoint")}
        item["filesystems"] = [{"device": f.get("dev"), **{c.tag: c.text for c in f if isinstance(c.tag, str)}}
                               for f in osel.iterfind("filesystems/filesystem")]
        systems.append(item)
    return {"vm": name, "readonly": readonly, "disks": [d["path"] for d in disks], "operating_systems": systems}


def _glob_quote(path: str) -> str:
    return re.sub(r"([\\*?\[\]{},])", r"\\\1", path)


# '.' (always there in a directory, so the pattern never falls back to itself), the visible and the hidden
# names ('..' left out): guestfish's glob expands braces, and both globs list the same names in one order
_ALL = "{.,*,.[!.]*,..?*}"


def _stat_entry(path: str, st: dict[str, str]) -> dict[str, Any]:
    mode = int(st.get("st_mode", "0"))
    return {"name": posixpath.basename(path) or "/", "path": path, "type": _FTYPE.get(mode & 0o170000, "other"),
            "mode": f"{mode & 0o7777:04o}", "size": int(st.get("st_size", "0")), "uid": int(st.get("st_uid", "0")),
            "gid": int(st.get("st_gid", "0")), "mtime": int(st.get("st_mtime_sec", "0"))}


def _parse_glob_listing(out: str) -> tuple[list[str], list[dict[str, str]]]:
    names, stats = [], []
    for line in out.splitlines():
        if line.startswith("/"):
            names.append(line.rstrip("/") or "/")
        elif line.startswith("st_dev:"):
            stats.append({"st_dev": line.split(":", 1)[1].strip()})
        elif line.startswith("st_") and stats:
            key, _, value = line.partition(":")
            stats[-1][key] = value.strip()
    return names, stats


def ls(conn: libvirt.virConnect, name: str, path: str, *, recursive: bool = False,
       readonly: bool = False) -> dict[str, Any]:
    """Entries of ``path`` (a directory's children, or the file itself): name, type, mode, size, uid, gid,
    mtime; ``recursive``: the whole tree below it (virt-ls -lR)."""
    path = guest_path(path)
    disks = vm_disks(conn, name, readonly=readonly)
    if recursive:
        return {"vm": name, "path": path, "entries": _ls_recursive(disks, path)}
    pattern = ("" if path == "/" else _glob_quote(path)) + "/" + _ALL
    try:
        out = guestfs.guestfish(disks, ["glob", "echo", pattern, ":", "glob", "lstatns", pattern])
    except InvalidInput as err:
        if "not a directory" not in err.message.lower():
            raise
        st = guestfs.guestfish(disks, ["lstatns", path])  # a file (or a link ...): itself
        _names, stats = _parse_glob_listing(st.decode("utf-8", errors="replace"))
        return {"vm": name, "path": path, "entries": [_stat_entry(path, stats[0])] if stats else []}
    names, stats = _parse_glob_listing(out.decode("utf-8", errors="replace"))
    entries = [_stat_entry(n, st) for n, st in zip(names, stats, strict=False)
               if posixpath.basename(n) not in (".", "..")]
    entries.sort(key=lambda e: e["name"])
    return {"vm": name, "path": path, "entries": entries}


def _ls_recursive(disks: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    out = guestfs.run("virt-ls", ["-lR", "--csv", "--time-t", "--uids", *guestfs.drive_args(disks), path])
    entries = []
    for row in csv.reader(io.StringIO(out.decode("utf-8", errors="replace"))):
        if len(row) < 9:
            continue
        kind, mode, size, uid, gid, _atime, mtime, _ctime, p = (c.strip() for c in row[:9])
        entry: dict[str, Any] = {"name": posixpath.basename(p) or "/", "path": p, "type": _LS_TYPE.get(kind, "other"),
                                 "mode": mode, "size": int(size or 0), "uid": int(uid or 0), "gid": int(gid or 0),
                                 "mtime": int(mtime or 0)}
        if len(row) > 9:
            entry["target"] = ",".join(row[9:])
        entries.append(entry)
    return entries


def df(conn: libvirt.virConnect, name: str, *, readonly: bool = False) -> dict[str, Any]:
    """Size and use of every file system on the VM's disks (virt-df; no OS needed)."""
    disks = vm_disks(conn, name, readonly=readonly)
    out = guestfs.run("virt-df", ["--csv", *guestfs.drive_args(disks)]).decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(out)))
    fss = []
    for row in rows[1:]:
        if len(row) >= 6:
            fss.append({"filesystem": row[1], "size_kib": int(row[2]), "used_kib": int(row[3]),
                        "available_kib": int(row[4]), "use_percent": float(row[5].rstrip("%") or 0)})
    return {"vm": name, "readonly": readonly, "filesystems": fss}


def cat(conn: libvirt.virConnect, name: str, path: str, dest: str | Path, *, readonly: bool = False) -> dict[str, Any]:
    """Copy the guest file ``path`` to the host file ``dest`` (created or replaced); {path, size, sha256}."""
    from kvmkit.service.copies.backup import sha256

    path = guest_path(path)
    disks = vm_disks(conn, name, readonly=readonly)
    dest = Path(dest)
    guestfs.guestfish(disks, ["download", path, str(dest.resolve())])
    return {"vm": name, "path": path, "size": dest.stat().st_size, "sha256": sha256(dest)}


def copy_out(conn: libvirt.virConnect, name: str, paths: list[str], local_dir: str | Path, *,
             readonly: bool = False) -> dict[str, Any]:
    """Copy guest files or directories (recursively) into the host directory ``local_dir``."""
    paths = [guest_path(p) for p in paths]
    if not paths:
        raise InvalidInput("no guest path to copy out", hint="e.g. kvmkit guest copy-out VM /etc/hostname ./out")
    local = Path(local_dir).resolve()
    if not local.is_dir():
        raise InvalidInput(f"{local} is not a directory on this host", hint="create it first, or give a directory")
    disks = vm_disks(conn, name, readonly=readonly)
    guestfs.guestfish(disks, ["copy-out", *paths, str(local)])
    return {"vm": name, "paths": paths, "to": str(local),
            "copied": [str(local / posixpath.basename(p)) for p in paths]}


def tar_out(conn: libvirt.virConnect, name: str, path: str, dest: str | Path, *,
            readonly: bool = False) -> dict[str, Any]:
    """The guest directory ``path`` as a tar file ``dest`` on the host (guestfish tar-out)."""
    path = guest_path(path)
    disks = vm_disks(conn, name, readonly=readonly)
    dest = Path(dest).resolve()
    guestfs.guestfish(disks, ["tar-out", path, str(dest)])
    return {"vm": name, "path": path, "size": dest.stat().st_size}


# --- writing (shut-off VMs only) -------------------------------------------------------------------

def copy_in(conn: libvirt.virConnect, name: str, local_paths: list[str], guest_dir: str) -> dict[str, Any]:
    """Copy host files or directories (recursively, keeping their names and modes) into the existing guest
    directory ``guest_dir`` of shut-off VM ``name``."""
    guest_dir = guest_path(guest_dir, "guest directory")
    if not local_paths:
        raise InvalidInput("no local file to copy in", hint="e.g. kvmkit guest copy-in VM ./motd /etc")
    local = [str(Path(p).resolve()) for p in local_paths]
    for p in local:
        if not os.path.exists(p):
            raise InvalidInput(f"{p} does not exist on this host", hint="check the local path")
    disks = vm_disks(conn, name, readonly=False, write=True)
    guestfs.guestfish(disks, ["copy-in", *local, guest_dir], write=True)
    return {"vm": name, "to": guest_dir, "copied": [posixpath.join(guest_dir, os.path.basename(p)) for p in local]}


def upload(conn: libvirt.virConnect, name: str, local_file: str | Path, path: str) -> dict[str, Any]:
    """Write the host file ``local_file`` as the guest file ``path`` (its directory must exist)."""
    from kvmkit.service.copies.backup import sha256

    path = guest_path(path)
    if path == "/":
        raise InvalidInput("give the guest file's path, not /", hint="e.g. /root/notes.txt")
    disks = vm_disks(conn, name, readonly=False, write=True)
    guestfs.guestfish(disks, ["upload", str(Path(local_file).resolve()), path], write=True)
    return {"vm": name, "path": path, "size": os.path.getsize(local_file), "sha256": sha256(local_file)}
