"""The pure part of a clone: how one VM's domain XML becomes another's (no libvirt calls, no files).

clone.py (and restore.py, restoring under a new name) decide where the copies go and make them; this
module only rewrites the tree, so the corpus tests run it over libvirt's own test documents.

What a clone must not share with its source: the name and UUID (also the one in <sysinfo>), the VM
generation ID, MACs (a failover pair keeps sharing one, a new one), log files, the NVRAM file, UNIX
sockets the VM listens on (chardevs in bind mode, VNC/SPICE sockets), fixed VNC/SPICE ports and vsock
CIDs. Sockets it connects to (a host service, e.g. behind a guestfwd channel) stay as they are, and
paths libvirt generates itself (the guest agent's socket) are left for libvirt to generate again.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from kvmkit.errors import InvalidState
from kvmkit.xml.osboot import nvram_path, set_nvram_path

AUTO_SOCKET_DIR = "/var/lib/libvirt/qemu/channel/target/"  # libvirt's own channel sockets


def own_path(path: str, old: str, new: str) -> str:
    """``path`` for the new VM, in the same directory: the old name replaced where it stands alone in the
    file name (``/run/a/a.sock`` -> ``/run/a/b.sock``), else the new name put before the file name."""
    p = Path(path)
    name = re.sub(rf"(?<![A-Za-z0-9]){re.escape(old)}(?![A-Za-z0-9])", lambda _m: new, p.name)
    return str(p.with_name(name if name != p.name else f"{new}-{p.name}"))


def _serial_log(path: str, old: str, new: str) -> str:
    p = Path(path)
    rest = p.name[len(old):]
    name = new + rest if p.name.startswith(old) and rest[:1] in (".", "-", "_") else f"{new}.serial.log"
    return str(p.with_name(name))


def rename_identity(root: etree._Element, old: str, new: str, *, uuid: str | None = None) -> dict[str, Any]:
    """Make ``root`` the definition of VM ``new``; returns its uuid, serial logs and NVRAM (old, new) path."""
    root.find("name").text = new
    new_uuid = uuid or str(uuidlib.uuid4())
    uuid_el = root.find("uuid")
    if uuid_el is None:
        uuid_el = etree.Element("uuid")
        root.find("name").addnext(uuid_el)
    uuid_el.text = new_uuid
    for entry in root.iterfind("sysinfo/system/entry[@name='uuid']"):
        entry.text = new_uuid  # libvirt refuses a <sysinfo> UUID other than the domain's
    genid = root.find("genid")
    if genid is not None:
        genid.text = None  # empty: libvirt generates a new VM generation ID
    logs = []
    for log in root.iterfind("devices/*/log[@file]"):
        dev = log.getparent()
        serial = dev.tag == "serial" or (dev.tag == "console" and _serial_console(dev))
        log.set("file", _serial_log(log.get("file"), old, new) if serial else own_path(log.get("file"), old, new))
        if serial:
            logs.append(log.get("file"))
    for dev in root.xpath("devices//*[@type='unix'][source/@path]"):  # chardevs, smartcards, redirdevs, rng ...
        _own_socket(dev, old, new)
    for src in root.iterfind("devices/interface[@type='vhostuser']/source[@mode='server']"):
        if src.get("path"):
            src.set("path", own_path(src.get("path"), old, new))  # QEMU listens there
    for gfx in root.iterfind("devices/graphics"):
        if gfx.get("autoport") == "no" or gfx.get("port") not in (None, "-1"):
            gfx.set("autoport", "yes")
            for attr in ("port", "tlsPort", "websocket"):
                gfx.attrib.pop(attr, None)
        for el in (gfx, *gfx.iterfind("listen[@type='socket']")):
            if el.get("socket"):
                el.set("socket", own_path(el.get("socket"), old, new))
    for cid in root.iterfind("devices/vsock/cid"):
        if cid.get("auto") != "yes":
            cid.set("auto", "yes")
            cid.attrib.pop("address", None)
    if root.find("os/nvram[@type='network']") is not None:
        raise InvalidState(f"the UEFI variables (NVRAM) of '{old}' are on network storage: kvmkit cannot copy them",
                           hint="copy them with the storage's own tools, or give the VM a local NVRAM file first")
    nv = None
    path = nvram_path(root)
    if path:
        nv = (path, str(Path(path).with_name(f"{new}_VARS.fd")))
        set_nvram_path(root, nv[1])
    return {"uuid": new_uuid, "serial_logs": logs, "nvram": nv}


def _serial_console(con: etree._Element) -> bool:
    target = con.find("target")
    return target is None or target.get("type", "serial") == "serial"


def _own_socket(dev: etree._Element, old: str, new: str) -> None:
    src = dev.find("source")
    path = src.get("path") if src is not None else None
    if not path:
        return
    target = dev.find("target")
    if path.startswith(AUTO_SOCKET_DIR) and target is not None and target.get("type") == "virtio":
        del src.attrib["path"]  # libvirt's own path for the old VM: it makes one for the new VM
    elif src.get("mode") == "bind":
        src.set("path", own_path(path, old, new))  # the VM listens there: two VMs cannot


def set_macs(root: etree._Element, fresh: Callable[[], str]) -> list[str]:
    """A new MAC from ``fresh()`` for every interface; interfaces that shared one share the new one."""
    given: dict[str, str] = {}
    chosen = []
    for iface in root.iterfind("devices/interface"):
        el = iface.find("mac")
        old = el.get("address", "").lower() if el is not None else ""
        mac = given.get(old) if old else None
        if mac is None:
            mac = fresh()
            chosen.append(mac)
            if old:
                given[old] = mac
        if el is None:
            el = etree.Element("mac")
            iface.insert(0, el)
        el.set("address", mac)
    return chosen


@dataclass
class DiskRef:
    """A disk a clone copies: where its data is now."""

    el: etree._Element
    target: str
    kind: str                  # file | block | volume
    path: str | None           # file or device path (for a volume: resolved by the caller)
    fmt: str | None            # <driver type>; None when the XML does not say (raw, or a volume's own format)
    pool: str | None = None
    volume: str | None = None


def disk_refs(root: etree._Element, vm: str) -> list[DiskRef]:
    """The disks a clone of ``vm`` copies: writable, private disks with media. CD-ROMs, floppies, LUNs,
    read-only and shareable disks are used as they are; a disk kvmkit cannot copy is refused."""
    refs = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None \
                or disk.find("shareable") is not None:
            continue
        source, driver = disk.find("source"), disk.find("driver")
        target = disk.find("target").get("dev", "?") if disk.find("target") is not None else "?"
        kind = disk.get("type", "file")
        fmt = driver.get("type") if driver is not None else None
        if source is None or not (source.attrib or len(source)):
            continue  # no media: nothing to copy
        if kind == "file" and source.get("file"):
            refs.append(DiskRef(disk, target, "file", source.get("file"), fmt))
        elif kind == "block" and source.get("dev"):
            refs.append(DiskRef(disk, target, "block", source.get("dev"), fmt))
        elif kind == "volume" and source.get("pool") and source.get("volume"):
            refs.append(DiskRef(disk, target, "volume", None, fmt, source.get("pool"), source.get("volume")))
        else:
            what = f"a {kind} disk" + (f" ({source.get('protocol')})" if source.get("protocol") else "")
            raise InvalidState(f"disk {target} of '{vm}' is {what}: kvmkit copies file, block and pool volume "
                               "disks only", hint="detach it before cloning (attach a copy made with its "
                               "storage's own tools afterwards), or mark it shareable to let both VMs use it")
    return refs


def point_disk(ref: DiskRef, kind: str, fmt: str, *, path: str | None = None, pool: str | None = None,
               volume: str | None = None) -> None:
    """Rewrite ``ref``'s <disk> to use its copy: a file, a block device or a volume in a pool."""
    disk = ref.el
    disk.set("type", kind)
    source = disk.find("source")
    if kind != ref.kind:
        for child in list(source):  # seclabels, reservations ... belong to the old kind of source
            source.remove(child)
    source.attrib.clear()
    if kind == "volume":
        source.set("pool", pool or "")
        source.set("volume", volume or "")
    else:
        source.set("file" if kind == "file" else "dev", path or "")
    driver = disk.find("driver")
    if driver is None:
        driver = etree.Element("driver", name="qemu")
        disk.insert(0, driver)
    driver.set("type", fmt)
    for bs in disk.findall("backingStore"):
        disk.remove(bs)
