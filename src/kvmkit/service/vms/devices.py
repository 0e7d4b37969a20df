"""Disks and NICs of existing VMs: attach/detach (live and persistent) and which storage a VM alone uses.

Live changes need a running VM; persistent ones (``config``) change the definition used at next boot.
With neither given, both apply to a running persistent VM and only the definition to a stopped one.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain, state_of
from kvmkit.service.vms.storage_use import (
    disk_source,
    domain_xmls,
    is_block_device,
    keep_owner_of_shared_media,
    real_path,
)

DISK_FORMATS = ("raw", "qcow2")
BUSES = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd", "usb": "sd"}
CACHE_MODES = ("none", "writethrough", "writeback", "directsync", "unsafe", "default")
NIC_MODELS = ("virtio", "e1000e", "e1000", "rtl8139")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
DETACH_TIMEOUT_S = 30.0


# ---- flags and XML helpers ---------------------------------------------------------------------------

def affect_flags(dom: libvirt.virDomain, live: bool | None, config: bool | None, what: str) -> int:
    """libvirt AFFECT flags for ``live``/``config`` (None = default: live if running, config if defined)."""
    active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
    if live is None and config is None:
        live, config = active, persistent
    if live and not active:
        raise InvalidState(f"cannot {what} live on VM {dom.name()}: it is {state_of(dom)}",
                           hint="use --config to change its definition (applies at next start), or start it first")
    if config and not persistent:
        raise InvalidState(f"cannot {what} in the definition of VM {dom.name()}: it is transient (not defined)",
                           hint="use --live only")
    flags = (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0)
    if not flags:
        raise InvalidInput(f"nothing to {what}: neither --live nor --config applies", hint="pass --live or --config")
    return flags


# ---- disks -------------------------------------------------------------------------------------------

def attach_disk(conn: libvirt.virConnect, name: str, *, fmt: str, path: str | None = None, pool: str | None = None,
                volume: str | None = None, target: str | None = None, bus: str = "virtio", cache: str | None = None,
                readonly: bool = False, live: bool | None = None, config: bool | None = None) -> dict[str, Any]:
    """Attach a file, block device or pool volume as a disk; the image format must be given (raw|qcow2)."""
    if fmt not in DISK_FORMATS:
        raise InvalidInput(f"invalid disk format '{fmt}': use one of {', '.join(DISK_FORMATS)}",
                           hint="kvmkit never guesses an image's format; `kvmkit image info FILE` shows it")
    if bus not in BUSES:
        raise InvalidInput(f"invalid disk bus '{bus}': use one of {', '.join(BUSES)}")
    if cache is not None and cache not in CACHE_MODES:
        raise InvalidInput(f"invalid disk cache '{cache}': use one of {', '.join(CACHE_MODES)}")
    path = _resolve_disk_path(conn, path, pool, volume)
    from kvmkit.images.qemu_img import probe_format

    found = probe_format(path)
    if found != fmt:
        raise InvalidInput(f"{path} is a {found} image, not {fmt}",
                           hint=f"give the format it has (--format {found}) or convert it with `kvmkit image convert`")
    dom = domain(conn, name)
    flags = affect_flags(dom, live, config, "attach a disk")
    roots = domain_xmls(dom, flags)
    used = {t.get("dev") for r in roots for t in r.iterfind("./devices/disk/target")}
    for r in roots:
        for disk in r.iterfind("./devices/disk"):
            if (src := disk_source(conn, disk)) and real_path(src) == real_path(path):
                dev = disk.find("target").get("dev")  # type: ignore[union-attr]
                raise Conflict(f"{path} is already attached to VM {name} as {dev}")
    if target is None:
        target = _free_target(BUSES[bus], used)
    elif target in used:
        raise Conflict(f"disk target {target} is already used in VM {name}", hint="pick another --target")
    elif not re.fullmatch(r"(vd|sd|hd)[a-z]{1,2}", target):
        raise InvalidInput(f"invalid disk target '{target}': use a name like vdb, sdb or hdb")
    block = is_block_device(path)
    disk = etree.Element("disk", type="block" if block else "file", device="disk")
    drv = etree.SubElement(disk, "driver", name="qemu", type=fmt)
    if cache:
        drv.set("cache", cache)
    etree.SubElement(disk, "source", **({"dev": path} if block else {"file": path}))
    etree.SubElement(disk, "target", dev=target, bus=bus)
    if readonly:
        etree.SubElement(disk, "readonly")
        keep_owner_of_shared_media(conn, disk)  # a medium the QEMU user can read is not given to it
    with libvirt_errors(f"attaching {path} to VM {name}"):
        dom.attachDeviceFlags(etree.tostring(disk, encoding="unicode"), flags)
    return {"name": name, "action": "disk attach", "target": target, "path": path, "format": fmt,
            "live": bool(flags & libvirt.VIR_DOMAIN_AFFECT_LIVE),
            "config": bool(flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG)}


def _resolve_disk_path(conn: libvirt.virConnect, path: str | None, pool: str | None, volume: str | None) -> str:
    if path and (pool or volume):
        raise InvalidInput("give either a disk path or --pool with --volume, not both")
    if pool or volume:
        if not (pool and volume):
            raise InvalidInput("a pool volume needs both --pool and --volume")
        with libvirt_errors(f"looking up volume {volume} in pool {pool}"):
            return str(conn.storagePoolLookupByName(pool).storageVolLookupByName(volume).path())
    if not path:
        raise InvalidInput("no disk given", hint="pass a file or device path, or --pool P --volume V")
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise InvalidInput(f"disk path {path} does not exist", hint="create it first, e.g. `kvmkit volume create`")
    return path


def _free_target(prefix: str, used: set[str | None]) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in ["", *letters]:
        for b in letters:
            if f"{prefix}{a}{b}" not in used:
                return f"{prefix}{a}{b}"
    raise Conflict("no free disk target name left")  # pragma: no cover


def detach_disk(conn: libvirt.virConnect, name: str, target: str, *, live: bool | None = None,
                config: bool | None = None, timeout: float = DETACH_TIMEOUT_S) -> dict[str, Any]:
    """Detach the disk with target ``target`` (e.g. vdb); waits until a running guest has released it."""
    dom = domain(conn, name)
    flags = affect_flags(dom, live, config, "detach a disk")
    xpath = f"./devices/disk[target/@dev='{target}']" if re.fullmatch(r"[a-z]{2,4}", target) else None
    if xpath is None:
        raise InvalidInput(f"invalid disk target '{target}': give a target name like vdb (see `kvmkit vm show`)")
    return _detach(dom, flags, xpath, f"disk {target}", timeout, {"target": target},
                   defaulted=live is None and config is None)


# ---- NICs --------------------------------------------------------------------------------------------

def _choose_mac(conn: libvirt.virConnect, mac: str | None) -> str:
    """``mac`` if no domain on the host uses it (Conflict naming the one that does), else a free generated one."""
    from kvmkit.service.vms import macs
    if mac is None:
        return macs.generate_mac(conn)
    mac = mac.lower()
    if not _MAC_RE.match(mac) or int(mac[:2], 16) & 1:
        raise InvalidInput(f"invalid MAC address '{mac}': use six hex pairs like 52:54:00:12:34:56 "
                           "(unicast: the first byte must be even)")
    macs.ensure_mac_free(conn, mac)
    return mac


def attach_nic(conn: libvirt.virConnect, name: str, *, network: str | None = None, bridge: str | None = None,
               model: str = "virtio", mac: str | None = None, live: bool | None = None,
               config: bool | None = None) -> dict[str, Any]:
    """Attach a NIC on a libvirt network or a host bridge; the MAC is generated when not given and a MAC
    any domain on the host already uses is refused, naming that domain."""
    if bool(network) == bool(bridge):
        raise InvalidInput("give exactly one of --network NAME or --bridge BRIDGE for the NIC")
    if model not in NIC_MODELS:
        raise InvalidInput(f"invalid NIC model '{model}': use one of {', '.join(NIC_MODELS)}")
    dom = domain(conn, name)
    flags = affect_flags(dom, live, config, "attach a NIC")
    if network:
        with libvirt_errors(f"looking up network {network}"):
            net = conn.networkLookupByName(network)
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE and not net.isActive():
            raise InvalidState(f"cannot attach a NIC on network {network} live: the network is not active",
                               hint=f"start it with `kvmkit net start {network}`")
    elif not os.path.isdir(f"/sys/class/net/{bridge}/bridge") and flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
        raise NotFound(f"host bridge {bridge} does not exist", hint="create it first (`kvmkit net create`)")
    mac = _choose_mac(conn, mac)
    kind = "network" if network else "bridge"
    iface = etree.Element("interface", type=kind)
    etree.SubElement(iface, "mac", address=mac)
    etree.SubElement(iface, "source", **{kind: str(network or bridge)})
    etree.SubElement(iface, "model", type=model)
    with libvirt_errors(f"attaching a NIC to VM {name}"):
        dom.attachDeviceFlags(etree.tostring(iface, encoding="unicode"), flags)
    return {"name": name, "action": "nic attach", "mac": mac, kind: network or bridge, "model": model,
            "live": bool(flags & libvirt.VIR_DOMAIN_AFFECT_LIVE),
            "config": bool(flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG)}


def detach_nic(conn: libvirt.virConnect, name: str, mac: str, *, live: bool | None = None,
               config: bool | None = None, timeout: float = DETACH_TIMEOUT_S) -> dict[str, Any]:
    """Detach the NIC with MAC address ``mac``."""
    mac = mac.lower()
    if not _MAC_RE.match(mac):
        raise InvalidInput(f"invalid MAC address '{mac}': use six hex pairs like 52:54:00:12:34:56")
    dom = domain(conn, name)
    flags = affect_flags(dom, live, config, "detach a NIC")
    return _detach(dom, flags, f"./devices/interface[mac/@address='{mac}']", f"NIC {mac}", timeout, {"mac": mac},
                   defaulted=live is None and config is None)


def _find(root: etree._Element, xpath: str) -> etree._Element | None:
    hits = root.xpath(xpath)
    return hits[0] if hits else None  # type: ignore[index,return-value]


def _detach(dom: libvirt.virDomain, flags: int, xpath: str, what: str, timeout: float,
            extra: dict[str, Any], *, defaulted: bool = False) -> dict[str, Any]:
    """Detach the element at ``xpath``. With ``defaulted`` flags (no --live/--config given), a device that
    exists only live or only in the definition is detached from where it is."""
    name = dom.name()
    found = None
    present = 0
    missing = []
    for flag, root in zip([f for f in (libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
                           if flags & f], domain_xmls(dom, flags), strict=True):
        el = _find(root, xpath)
        if el is None:
            missing.append("running VM" if flag == libvirt.VIR_DOMAIN_AFFECT_LIVE else "definition of VM")
            continue
        present |= flag
        found = found if found is not None else el
    if found is None or (missing and not defaulted):
        raise NotFound(f"{what} is not attached to the {' or the '.join(missing)} {name}",
                       hint=f"see its devices with `kvmkit vm show {name}`")
    flags = present
    assert found is not None
    with libvirt_errors(f"detaching {what} from VM {name}"):
        dom.detachDeviceFlags(etree.tostring(found, encoding="unicode"), flags)
    if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
        deadline = time.monotonic() + timeout
        while _find(etree.fromstring(dom.XMLDesc(0).encode()), xpath) is not None:
            if time.monotonic() > deadline:
                raise OperationFailed(f"the guest of VM {name} has not released {what} within {timeout:g} s",
                                      hint="the guest must support hot-unplug (ACPI); it may still release it, "
                                           "or detach with --config and restart the VM")
            time.sleep(0.3)
    return {"name": name, "action": f"{what.split()[0].lower()} detach", **extra,
            "live": bool(flags & libvirt.VIR_DOMAIN_AFFECT_LIVE),
            "config": bool(flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG)}
