"""What a migration needs to know of a domain's XML (disks, boot files, logs, NICs, CPU, machine), and the
one change kvmkit makes to the definition a destination starts from: serial/console logs appended to."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree


@dataclass
class DiskRef:
    target: str
    path: str
    kind: str  # disk | cdrom | boot | log
    readonly: bool
    format: str | None = None
    cache: str | None = None
    source_type: str = "file"  # file | block | volume | network


@dataclass
class NicRef:
    type: str  # network | bridge | direct | user | ethernet | ...
    source: str | None
    mac: str | None = None


@dataclass
class DomainNeeds:
    name: str
    uuid: str
    virt_type: str
    arch: str
    machine: str | None
    emulator: str | None
    cpu_xml: str | None  # the <cpu> element as libvirt's compare calls take it (None: QEMU's default CPU)
    cpu_mode: str | None
    memory_mib: int
    vcpus: int
    disks: list[DiskRef] = field(default_factory=list)
    files: list[DiskRef] = field(default_factory=list)  # kernel, initrd, loader, nvram, logs
    nics: list[NicRef] = field(default_factory=list)
    hostdevs: list[str] = field(default_factory=list)


def _mib(el: etree._Element | None) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    value = int(el.text.strip())
    unit = (el.get("unit") or "KiB").lower()
    scale = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024,
             "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024}.get(unit, 1)
    return int(value * scale) // 1024


def read_needs(xml: str) -> DomainNeeds:
    root = etree.fromstring(xml.encode())
    os_type = root.find("os/type")
    vcpu = root.find("vcpu")
    vcpus = int(vcpu.get("current") or (vcpu.text or "1").strip()) if vcpu is not None else 1
    cpu = root.find("cpu")
    cpu_mode = None
    cpu_xml = None
    if cpu is not None:
        cpu_mode = cpu.get("mode") or ("custom" if cpu.find("model") is not None else None)
        if cpu_mode is not None:
            cpu_xml = etree.tostring(cpu, encoding="unicode")
    memory = root.find("currentMemory")
    needs = DomainNeeds(
        name=root.findtext("name") or "", uuid=root.findtext("uuid") or "", virt_type=root.get("type") or "kvm",
        arch=os_type.get("arch", "x86_64") if os_type is not None else "x86_64",
        machine=os_type.get("machine") if os_type is not None else None,
        emulator=(root.findtext("devices/emulator") or "").strip() or None,
        cpu_xml=cpu_xml, cpu_mode=cpu_mode,
        memory_mib=_mib(memory if memory is not None else root.find("memory")), vcpus=vcpus)
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        dev = target.get("dev", "?") if target is not None else "?"
        kind = "cdrom" if disk.get("device") in ("cdrom", "floppy") else "disk"
        readonly = disk.find("readonly") is not None or kind == "cdrom" or disk.find("shareable") is not None
        driver = disk.find("driver")
        stype = disk.get("type", "file")
        path = None
        if source is not None:
            path = source.get("file") or source.get("dev")
            if stype == "volume":
                path = None  # pool/volume: resolved by the caller through libvirt
        if source is None or (stype in ("file", "block") and not path):
            continue  # an empty CD-ROM drive
        ref = DiskRef(dev, path or "", kind, readonly, driver.get("type") if driver is not None else None,
                      driver.get("cache") if driver is not None else None, stype)
        if stype == "volume" and source is not None:
            ref.path = f"{source.get('pool')}/{source.get('volume')}"
        needs.disks.append(ref)
    for tag in ("kernel", "initrd", "loader", "nvram"):
        el = root.find(f"os/{tag}")
        path = (el.text or "").strip() if el is not None else ""
        if tag == "nvram" and el is not None and not path:
            src = el.find("source")
            path = src.get("file", "") if src is not None else ""
        if path:
            needs.files.append(DiskRef(tag, path, "boot", tag in ("kernel", "initrd", "loader")))
    seen = set()
    for log in root.findall("devices/*/log"):
        path = log.get("file")
        if path and path not in seen:
            seen.add(path)
            needs.files.append(DiskRef("serial-log", path, "log", False))
    for nic in root.findall("devices/interface"):
        source = nic.find("source")
        src = None
        if source is not None:
            src = source.get("network") or source.get("bridge") or source.get("dev")
        mac = nic.find("mac")
        needs.nics.append(NicRef(nic.get("type", "?"), src, mac.get("address") if mac is not None else None))
    for hd in root.findall("devices/hostdev"):
        needs.hostdevs.append(hd.get("type", "?"))
    return needs


def logs_appended(xml: str) -> str | None:
    """``xml`` with every character device's ``<log append>`` set to ``on``; None when all already were.

    A destination QEMU opens the log file anew: with ``append='off'`` it truncates the history the source
    wrote (the file is the same one when the path is on storage both hosts see)."""
    root = etree.fromstring(xml.encode())
    changed = False
    for log in root.findall("devices/*/log"):
        if log.get("file") and log.get("append") != "on":
            log.set("append", "on")
            changed = True
    return etree.tostring(root, encoding="unicode") if changed else None


def volume_facts(xml: str) -> dict[str, Any]:
    """A storage volume's path, format, sizes and file timestamps (libvirt's view of the file on its host)."""
    root = etree.fromstring(xml.encode())

    def num(path: str) -> int | None:
        text = root.findtext(path)
        return int(text) if text and text.strip().isdigit() else None

    def stamp(tag: str) -> str | None:
        text = root.findtext(f"target/timestamps/{tag}")
        return text.strip() if text else None

    fmt = root.find("target/format")
    backing = root.findtext("backingStore/path")
    return {"name": root.findtext("name"), "path": root.findtext("target/path"),
            "format": fmt.get("type") if fmt is not None else None, "capacity": num("capacity"),
            "allocation": num("allocation"), "mtime": stamp("mtime"), "ctime": stamp("ctime"),
            "backing": backing.strip() if backing else None}


def pool_facts(xml: str) -> dict[str, Any]:
    root = etree.fromstring(xml.encode())
    return {"name": root.findtext("name"), "type": root.get("type"), "path": root.findtext("target/path"),
            "format": (root.find("source/format").get("type") if root.find("source/format") is not None
                       else None)}


def dir_pool_xml(name: str, path: str) -> str:
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = name
    etree.SubElement(etree.SubElement(pool, "target"), "path").text = path
    return etree.tostring(pool, encoding="unicode")


def volume_xml(name: str, capacity: int, fmt: str | None) -> str:
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = name
    etree.SubElement(vol, "capacity", unit="bytes").text = str(capacity)
    etree.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=fmt or "raw")
    return etree.tostring(vol, encoding="unicode")
