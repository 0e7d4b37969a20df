"""Clone a VM: full copies or linked qcow2 overlays, with a new name, UUID, MACs and serial log.

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
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidState, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.copies import snapshots
from kvmkit.xml.chardevs import keep_log_history

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
    """Give every interface of ``root`` a fresh unused MAC; return them."""
    from kvmkit.service.vms.macs import generate_mac, used_macs

    chosen: list[str] = []
    used = used_macs(conn) if root.find("devices/interface") is not None else {}  # one pass over the domains
    for iface in root.iterfind("devices/interface"):
        mac = generate_mac(conn, used=used, avoid=set(chosen))
        chosen.append(mac)
        el = iface.find("mac")
        if el is None:
            el = etree.SubElement(iface, "mac")
        el.set("address", mac)
    return chosen


def rename_identity(root: etree._Element, old: str, new: str) -> dict[str, Any]:
    """Rename a domain tree to ``new``: drop UUID, give serial logs/nvram/channels paths of their own."""
    root.find("name").text = new
    uuid = root.find("uuid")
    if uuid is not None:
        root.remove(uuid)
    logs: list[str] = []
    for log in root.iterfind("devices/*/log"):
        path = Path(log.get("file", ""))
        rest = path.name[len(old):]
        name = new + rest if path.name.startswith(old) and rest[:1] in (".", "-", "_") else f"{new}.serial.log"
        log.set("file", str(path.with_name(name)))
        logs.append(log.get("file"))
    for ch in root.iterfind("devices/channel"):  # unix sockets named after the old VM: let libvirt pick
        src = ch.find("source")
        if src is not None and src.get("path") and ch.get("type") == "unix":
            del src.attrib["path"]
    for gfx in root.iterfind("devices/graphics"):
        if gfx.get("autoport") == "no" or gfx.get("port") not in (None, "-1"):
            gfx.set("autoport", "yes")
            gfx.attrib.pop("port", None)
            gfx.attrib.pop("websocket", None)
    nvram = root.find("os/nvram")
    nv: tuple[str, str] | None = None
    if nvram is not None and nvram.text:
        new_path = str(Path(nvram.text).with_name(f"{new}_VARS.fd"))
        nv = (nvram.text, new_path)
        nvram.text = new_path
    return {"serial_logs": logs, "nvram": nv}


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
    made_files: list[str] = []
    linked_snap: str | None = None
    defined = None
    try:
        if linked and snapshots.disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), conn):
            linked_snap = f"linked-{new}"[:64]
            snapshots.create_snapshot(conn, src, linked_snap, disk_only=True,
                                      description=f"base of linked clone '{new}' (keep while '{new}' exists)")
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE
                                            | libvirt.VIR_DOMAIN_XML_SECURE).encode())
        ident = rename_identity(root, src, new)
        keep_log_history(root)  # the clone's own log, append-only from its first boot
        macs = new_macs(conn, root)
        disk_out = _copy_disks(conn, root, src, new, linked=linked, shared=bool(dom.isActive()), made=made_files,
                               progress=progress)
        if ident["nvram"] and os.path.exists(ident["nvram"][0]):
            if os.path.exists(ident["nvram"][1]):
                raise Conflict(f"NVRAM file {ident['nvram'][1]} exists already", hint="remove it or pick another name")
            shutil.copy2(*ident["nvram"])
            made_files.append(ident["nvram"][1])
        with libvirt_errors(f"define clone {new}"):
            defined = conn.defineXML(etree.tostring(root, encoding="unicode"))
    except BaseException:
        _rollback(conn, src, made_files, linked_snap)
        raise
    snapshots.refresh_pools(conn)
    if progress:
        progress(100.0)
    return {"name": new, "source": src, "linked": linked, "uuid": defined.UUIDString(), "disks": disk_out,
            "macs": macs, "serial_logs": ident["serial_logs"], "source_snapshot": linked_snap}


def _copy_disks(conn: libvirt.virConnect, root: etree._Element, src: str, new: str, *, linked: bool, shared: bool,
                made: list[str],
                progress: Progress | None) -> list[dict[str, Any]]:
    elements = []
    for disk in root.iterfind("devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None \
                or disk.find("shareable") is not None:
            continue  # cdroms and shared/read-only disks are used as they are
        source = disk.find("source")
        if disk.get("type") == "volume" and source is not None:  # a pool volume: clone the file behind it
            path = snapshots.volume_path(conn, source.get("pool"), source.get("volume"))
            if path:
                disk.set("type", "file")
                source.attrib.clear()
                source.set("file", path)
        if disk.get("type") != "file" or source is None or not source.get("file"):
            raise InvalidState(f"disk {disk.find('target').get('dev')} of '{src}' is not a file disk: "
                               "kvmkit clones file disks only", hint="detach it before cloning, or copy it yourself")
        elements.append(disk)
    out: list[dict[str, Any]] = []
    count = max(len(elements), 1)
    for i, disk in enumerate(elements):
        source, driver = disk.find("source"), disk.find("driver")
        target = disk.find("target").get("dev")
        path, fmt = source.get("file"), driver.get("type", "raw")
        dst_fmt = "qcow2" if linked else fmt
        dst = str(Path(path).parent / f"{new}-{target}.{dst_fmt}")
        if os.path.exists(dst):
            raise Conflict(f"disk file {dst} exists already", hint="remove it or pick another name for the clone")
        made.append(dst)
        if linked:
            # the source's current disk is its new snapshot overlay: the clone shares that overlay's base
            chain = snapshots.backing_chain(path, fmt)
            base = chain[1]
            snapshots.qemu_img("create", "-q", "-f", "qcow2", "-b", base["path"], "-F", base["format"], dst)
            out.append({"target": target, "path": dst, "format": "qcow2", "backing": base["path"],
                        "backing_format": base["format"]})
        else:
            convert(path, fmt, dst, dst_fmt, shared=shared, progress=scaled(progress, 100 * i / count, 100 / count))
            out.append({"target": target, "path": dst, "format": dst_fmt, "backing": None})
        source.set("file", dst)
        driver.set("type", dst_fmt)
        for bs in disk.findall("backingStore"):
            disk.remove(bs)
    return out


def _rollback(conn: libvirt.virConnect, src: str, files: list[str], linked_snap: str | None) -> None:
    for f in files:
        with contextlib.suppress(OSError):
            os.unlink(f)
    if linked_snap:
        with contextlib.suppress(Exception):
            snapshots.delete_snapshot(conn, src, linked_snap)
    snapshots.refresh_pools(conn)
