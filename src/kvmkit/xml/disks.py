"""<disk> devices: files, block devices and pool volumes as disks or CD-ROMs.

Disks kvmkit cannot describe (network disks, floppies, LUNs, other formats or buses) are left exactly
as they are; disks it manages are matched by target device and only changed where the spec differs.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.spec.vm_devices import DiskSpec
from kvmkit.xml import drives
from kvmkit.xml.util import ensure, insert_ordered, remove

FIELDS = ("disks",)
_BUS_TO_XML = {"virtio": "virtio", "virtio-scsi": "scsi", "sata": "sata", "ide": "ide"}
_XML_TO_BUS = {v: k for k, v in _BUS_TO_XML.items()}
_PREFIX = {"virtio": "vd", "virtio-scsi": "sd", "sata": "sd", "ide": "hd"}


def _parse_disk(el: etree._Element) -> DiskSpec | None:
    """The DiskSpec for one <disk>, or None when kvmkit does not manage this kind of disk."""
    device, dtype = el.get("device", "disk"), el.get("type", "file")
    target = el.find("target")
    driver = el.find("driver")
    source = el.find("source")
    if device not in ("disk", "cdrom") or dtype not in ("file", "block", "volume") or target is None:
        return None
    bus = _XML_TO_BUS.get(target.get("bus", ""))
    fmt = driver.get("type") if driver is not None else None
    if bus is None or fmt not in (None, "raw", "qcow2"):
        return None
    data: dict[str, Any] = {"device": device, "bus": bus, "target": target.get("dev"), "format": fmt,
                            "readonly": el.find("readonly") is not None,
                            "shareable": el.find("shareable") is not None}
    if driver is not None:  # 'default' is libvirt's spelling of "not set"
        data["cache"] = None if driver.get("cache") == "default" else driver.get("cache")
        data["io"] = None if driver.get("io") == "default" else driver.get("io")
    if source is not None:
        if dtype == "file":
            data["path"] = source.get("file")
        elif dtype == "block":
            data["path"] = source.get("dev")
        else:
            data["pool"], data["volume"] = source.get("pool"), source.get("volume")
    try:
        return DiskSpec.model_validate(data)
    except ValueError:
        return None


def managed(devices: etree._Element | None) -> list[tuple[etree._Element, DiskSpec]]:
    if devices is None:
        return []
    out = []
    seen: set[str | None] = set()
    for el in devices.findall("disk"):
        spec = _parse_disk(el)
        if spec is not None and spec.target not in seen:  # a second disk on one target is left alone
            seen.add(spec.target)
            out.append((el, spec))
    return out


def read(root: etree._Element) -> dict[str, Any]:
    return {"disks": [spec for _el, spec in managed(root.find("devices"))]}


def assign_targets(disks: list[DiskSpec], taken: set[str]) -> list[str]:
    """Target devices for ``disks``: their own, else the next free vdX/sdX/hdX for their bus."""
    used = set(taken) | {d.target for d in disks if d.target}
    out = []
    for disk in disks:
        if disk.target:
            out.append(disk.target)
            continue
        prefix = _PREFIX[disk.bus]
        for i in range(26 * 27):
            suffix = chr(97 + i) if i < 26 else chr(96 + i // 26) + chr(97 + i % 26)
            name = prefix + suffix
            if name not in used:
                used.add(name)
                out.append(name)
                break
    return out


def write(root: etree._Element, spec: Any) -> None:
    devices = ensure(root, "devices")
    current = managed(devices)
    managed_targets = {d.target for _el, d in current}
    unmanaged = {t.get("dev") for t in devices.findall("disk/target")} - managed_targets
    targets = assign_targets(spec.disks, unmanaged)
    by_target = {d.target: el for el, d in current}
    wanted = set(targets)
    for el, d in current:
        if d.target not in wanted:
            remove(el)
    for disk, target in zip(spec.disks, targets, strict=True):
        disk = disk.model_copy(update={"target": target})
        el = by_target.get(target)
        if el is None:
            el = etree.Element("disk")
            _fill(el, disk, None)
            _place(devices, el)
            insert_ordered(devices, el)
        else:
            old = _parse_disk(el)
            if old != disk:
                _fill(el, disk, old)
                if old is not None and old.bus != disk.bus:
                    _place(devices, el)
    # a SCSI disk needs a SCSI controller: add a virtio-scsi one when there is none at all (another model
    # at index 0, e.g. lsilogic, serves as well; a second controller at index 0 would be refused)
    if any(d.bus == "virtio-scsi" for d in spec.disks) and devices.find("controller[@type='scsi']") is None:
        insert_ordered(devices, etree.Element("controller", type="scsi", index="0", model="virtio-scsi"))


def _place(devices: etree._Element, el: etree._Element) -> None:
    """Give a disk new on its bus a free drive address (none needed on virtio: libvirt picks a PCI slot)."""
    address = drives.free_address(devices, el.find("target").get("bus"), exclude=el)
    if address is not None:
        el.append(address)


def _fill(el: etree._Element, disk: DiskSpec, old: DiskSpec | None) -> None:
    if disk.is_new:
        raise InvalidInput(f"disk {disk.target} has no file yet (size={disk.size})",
                           hint="create the volume first (vm create does) and give its path")
    same_source = old is not None and (old.path, old.pool, old.volume) == (disk.path, disk.pool, disk.volume)
    if not same_source:  # a file under /dev stays a file disk while its source stays
        el.set("type", "volume" if disk.volume else ("block" if disk.is_block else "file"))
    el.set("device", disk.device)
    driver = el.find("driver")
    if driver is None:
        driver = etree.Element("driver")
        el.insert(0, driver)
    driver.set("name", driver.get("name", "qemu"))
    driver.set("type", disk.format or "raw")
    for attr in ("cache", "io"):
        if getattr(disk, attr):
            driver.set(attr, getattr(disk, attr))
        else:
            driver.attrib.pop(attr, None)
    if not same_source:
        remove(el.find("source"))
        source = None
        if disk.path:
            source = etree.Element("source", **({"dev": disk.path} if disk.is_block else {"file": disk.path}))
        elif disk.volume:
            source = etree.Element("source", pool=disk.pool or "default", volume=disk.volume)
        if source is not None:
            driver.addnext(source)
    target = el.find("target")
    if target is None:
        target = etree.SubElement(el, "target")
    if old is not None and old.bus != disk.bus:
        remove(el.find("address"))  # the old controller address does not fit the new bus
    target.set("dev", disk.target or "")
    target.set("bus", _BUS_TO_XML[disk.bus])
    for tag in ("readonly", "shareable"):
        have = el.find(tag)
        if getattr(disk, tag) and have is None:
            target.addnext(etree.Element(tag))
        elif not getattr(disk, tag) and have is not None:
            remove(have)


# ---- libvirt's DAC relabelling per disk source --------------------------------------------------------

def read_only_file_media(root: etree._Element) -> list[tuple[etree._Element, str]]:
    """(<disk>, file) for every CD-ROM and read-only disk backed by a file: media that many VMs can share."""
    out = []
    for el in root.iter("disk"):
        source = el.find("source")
        readonly = el.get("device") == "cdrom" or el.find("readonly") is not None
        if readonly and el.get("type", "file") == "file" and source is not None and source.get("file"):
            out.append((el, source.get("file") or ""))
    return out


def set_dac_relabel(disk: etree._Element, relabel: bool) -> None:
    """``relabel=False``: a per-source ``<seclabel model='dac' relabel='no'/>`` makes libvirt leave the
    file's owner alone (it would otherwise give a read-only medium to the QEMU user for good); True:
    libvirt's default again. Other models' labels are left as they are."""
    source = disk.find("source")
    if source is None:
        return
    dac = [s for s in source.findall("seclabel") if s.get("model") == "dac"]
    if relabel:
        for s in dac:
            remove(s)
    elif not dac:
        etree.SubElement(source, "seclabel", model="dac", relabel="no")
    else:
        for s in dac:
            s.set("relabel", "no")
            for child in list(s):
                remove(child)  # a <label> goes with relabel='yes' only
