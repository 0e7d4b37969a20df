"""What storage a VM uses, which of it only that VM uses (for ``vm delete --storage``), and every host file
VMs name (for libvirt's security records: ``host check``, ``host repair``)."""

from __future__ import annotations

import os
import stat

import libvirt
from lxml import etree

from kvmkit.hypervisor.errors import libvirt_errors


def domain_xmls(dom: libvirt.virDomain, flags: int) -> list[etree._Element]:
    """The live and/or persistent domain XML trees that ``flags`` touch."""
    out = []
    if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
        out.append(etree.fromstring(dom.XMLDesc(0).encode()))
    if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
        out.append(etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode()))
    return out


def _all_xmls(dom: libvirt.virDomain) -> list[etree._Element]:
    flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0) | \
        (libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0)
    return domain_xmls(dom, flags)


def disk_source(conn: libvirt.virConnect, disk: etree._Element) -> str | None:
    """The host path behind a <disk> element (file, block device or pool volume), if it has one."""
    src = disk.find("source")
    if src is None:
        return None
    kind = disk.get("type", "file")
    if kind == "file":
        return src.get("file")
    if kind == "block":
        return src.get("dev")
    if kind == "volume" and src.get("pool") and src.get("volume"):
        try:
            return conn.storagePoolLookupByName(src.get("pool")).storageVolLookupByName(src.get("volume")).path()
        except libvirt.libvirtError:
            return None
    return None


def real_path(path: str) -> str:
    return os.path.realpath(path)


# ---- what storage a VM alone uses (for delete --storage) ---------------------------------------------

def storage_plan(conn: libvirt.virConnect, dom: libvirt.virDomain) -> tuple[list[str], list[dict[str, str]]]:
    """(paths that only ``dom`` uses, [{"path", "reason"}] kept because something else needs them).

    CD-ROM media are never listed. A disk's backing chain goes with it (the base a disk-only snapshot
    left below its overlay, for one), down to the first file that something else needs. A disk or backing
    file is kept when another domain (running or defined) has it as a disk or in its backing chain, when
    another pool volume or file uses it as backing file, when it is a template, or when it is a host block
    device outside any storage pool. On a remote host only pool volumes are deleted.
    """
    mine: list[str] = []
    local = _is_local(conn)
    for root in _all_xmls(dom):
        for disk in root.iterfind("./devices/disk"):
            if disk.get("device", "disk") not in ("disk", "lun"):
                continue
            path = disk_source(conn, disk)
            if not path:
                continue
            for p in [path, *_chain_below(conn, disk, path, local)]:
                if real_path(p) not in mine:
                    mine.append(real_path(p))
    users = _other_users(conn, dom.UUIDString(), local)
    backs = _backing_users(conn, set(mine))
    delete, kept = [], []
    from kvmkit.service.storage.template_registry import template_for_path

    for path in mine:
        if template_for_path(path):
            kept.append({"path": path, "reason": f"template {template_for_path(path)}"})
        elif path in users:
            kept.append({"path": path, "reason": f"used by VM {users[path]}"})
        elif path in backs:
            kept.append({"path": path, "reason": f"backing file of volume {backs[path]}"})
        elif _is_volume(conn, path):
            delete.append(path)
        elif not _is_local(conn):
            kept.append({"path": path, "reason": "not a storage pool volume on a remote host (kvmkit deletes only "
                                                 "volumes there)"})
        elif not os.path.lexists(path):
            kept.append({"path": path, "reason": "does not exist (nothing to delete)"})
        elif is_block_device(path):
            kept.append({"path": path, "reason": "host block device (not a pool volume)"})
        else:
            delete.append(path)
    return delete, kept


def _is_local(conn: libvirt.virConnect) -> bool:
    from urllib.parse import urlparse

    host = urlparse(conn.getURI()).hostname
    return not host or host in ("localhost", "127.0.0.1", "::1")


def _chain_below(conn: libvirt.virConnect, disk: etree._Element, path: str, local: bool) -> list[str]:
    """The backing files below a disk's image, top first: from the qcow2 headers on this host (they are
    the truth), else from the XML's backingStore elements."""
    if local and os.path.isfile(path):
        from kvmkit.images.qcow2_header import backing_files

        chain = backing_files(path)
        if chain is not None:
            return chain
    return [b.get("file") or b.get("dev") or "" for b in disk.iterfind(".//backingStore/source")
            if b.get("file") or b.get("dev")]


def _other_users(conn: libvirt.virConnect, uuid: str, local: bool = False) -> dict[str, str]:
    """Map every disk path (and backing path) of other domains to one domain name using it."""
    users: dict[str, str] = {}
    with libvirt_errors("listing VMs"):
        doms = conn.listAllDomains()
    for other in doms:
        try:
            if other.UUIDString() == uuid:
                continue
            for root in _all_xmls(other):
                for disk in root.iterfind("./devices/disk"):
                    path = disk_source(conn, disk)
                    if path:
                        users.setdefault(real_path(path), other.name())
                        for bpath in _chain_below(conn, disk, path, local):
                            users.setdefault(real_path(bpath), other.name())
                    for back in disk.iterfind(".//backingStore/source"):
                        bpath = back.get("file") or back.get("dev")
                        if bpath:
                            users.setdefault(real_path(bpath), other.name())
        except libvirt.libvirtError:  # the domain went away while we looked
            continue
    return users


def _backing_users(conn: libvirt.virConnect, paths: set[str]) -> dict[str, str]:
    """Map each of ``paths`` that backs another pool volume (not in ``paths``) to that volume's path."""
    found: dict[str, str] = {}
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        try:
            vols = pool.listAllVolumes()
        except libvirt.libvirtError:
            continue
        for vol in vols:
            try:
                root = etree.fromstring(vol.XMLDesc(0).encode())
            except libvirt.libvirtError:
                continue
            back = root.findtext("./backingStore/path")
            if back and real_path(back) in paths and real_path(vol.path()) not in paths:
                found.setdefault(real_path(back), vol.path())
    return found


def is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _is_volume(conn: libvirt.virConnect, path: str) -> bool:
    try:
        conn.storageVolLookupByPath(path)
        return True
    except libvirt.libvirtError:
        return False


# ---- every host file a domain names (for libvirt's security records: host check, host repair) --------

_OS_FILES = ("./os/kernel", "./os/initrd", "./os/dtb", "./os/loader", "./os/nvram", "./os/acpi/table")
_CHARDEVS = ("serial", "parallel", "console", "channel")


def domain_files(conn: libvirt.virConnect, root: etree._Element) -> set[str]:
    """The host files one domain XML names that libvirt's security drivers label when it starts: disk
    sources (CD-ROMs too) and their backing chains, kernel, initrd, DTB, firmware loader, NVRAM, ACPI
    tables, and file-backed character devices with their logs. Resolved paths."""
    paths: set[str] = set()
    for disk in root.iterfind("./devices/disk"):
        path = disk_source(conn, disk)
        if path:
            paths.add(path)
        for back in disk.iterfind(".//backingStore/source"):
            if back.get("file") or back.get("dev"):
                paths.add(back.get("file") or back.get("dev") or "")
    for xpath in _OS_FILES:
        for el in root.iterfind(xpath):
            path = el.text.strip() if el.text and el.text.strip() else None
            source = el.find("source")  # <nvram type='file'><source file=.../></nvram>
            paths.update(p for p in (path, source.get("file") if source is not None else None) if p)
    for kind in _CHARDEVS:
        for dev in root.iterfind(f"./devices/{kind}"):
            if dev.get("type") == "file":
                paths.update(s.get("path") for s in dev.iterfind("source") if s.get("path"))
            paths.update(log.get("file") for log in dev.iterfind("log") if log.get("file"))
    return {real_path(p) for p in paths if p.startswith("/")}


def files_of_running_vms(conn: libvirt.virConnect) -> dict[str, list[str]]:
    """Resolved path -> names of the running (or paused) VMs whose live XML names the file."""
    users: dict[str, list[str]] = {}
    with libvirt_errors("listing VMs"):
        doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    for dom in doms:
        try:
            root = etree.fromstring(dom.XMLDesc(0).encode())
            name = dom.name()
        except libvirt.libvirtError:  # stopped or went away meanwhile
            continue
        for path in domain_files(conn, root):
            users.setdefault(path, []).append(name)
    return users


def files_of_defined_vms(conn: libvirt.virConnect) -> set[str]:
    """Every file any VM (running or defined) names, live and persistent definitions alike."""
    paths: set[str] = set()
    with libvirt_errors("listing VMs"):
        doms = conn.listAllDomains()
    for dom in doms:
        try:
            roots = _all_xmls(dom)
        except libvirt.libvirtError:
            continue
        for root in roots:
            paths |= domain_files(conn, root)
    return paths


def keep_owner_of_shared_media(conn: libvirt.virConnect, root: etree._Element) -> list[str]:
    """Mark the read-only media (CD-ROMs, read-only file disks) in ``root`` (a domain or a lone <disk>) that
    the QEMU user can read as they are with ``<seclabel model='dac' relabel='no'/>``, so libvirt does not
    give them to the QEMU user (for good: read-only media are never given back) each time a VM using them
    starts. Media it cannot read are left to libvirt's relabelling. Local hosts only (the files are
    stat'ed here). Returns the files marked."""
    from kvmkit.host.check import dac_base_owner
    from kvmkit.host.seclabels import readable_as
    from kvmkit.xml.disks import read_only_file_media, set_dac_relabel

    media = read_only_file_media(root)
    if not media or not _is_local(conn):
        return []
    with libvirt_errors("reading the host capabilities"):
        owner = dac_base_owner(conn.getCapabilities())
    marked = []
    for disk, path in media:
        if readable_as(path, owner):
            set_dac_relabel(disk, False)
            marked.append(path)
    return marked
