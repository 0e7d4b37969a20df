"""Reading an OVF descriptor (DMTF OVF 1.x/2.x, as VMware and VirtualBox export it) into what an import needs.

The XML is parsed with lxml with entities, DTDs and the network off (``resolve_entities=False,
no_network=True, load_dtd=False, huge_tree=False``), and a descriptor carrying a DOCTYPE or entity
declarations is refused outright (an OVF never needs one; "billion laughs" needs one). From the first
VirtualSystem: its name, vCPUs (ResourceType 3), memory (4), disks (17, through DiskSection and References
to the files in the package), NICs (10) and CD-ROMs (15/16, not imported); the guest OS as the exporter
names it (OperatingSystemSection) and the firmware (VMware's ``firmware`` config, VirtualBox's
``<Firmware type=...>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from kvmkit.errors import InvalidInput

MAX_OVF_BYTES = 4 * 1024 * 1024
OVF_NS = ("http://schemas.dmtf.org/ovf/envelope/1", "http://schemas.dmtf.org/ovf/envelope/2")
RASD_NS = ("http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",)
VMW_NS = "http://www.vmware.com/schema/ovf"
VBOX_NS = "http://www.virtualbox.org/ovf/machine"
# AllocationUnits as OVF writes them: "byte * 2^20", "MegaBytes", "MB", "GB", "byte"
_UNITS = {"byte": 1, "bytes": 1, "kilobytes": 1024, "kb": 1024, "megabytes": 1024**2, "mb": 1024**2,
          "gigabytes": 1024**3, "gb": 1024**3, "terabytes": 1024**4}
_POW = re.compile(r"^\s*byte\s*\*\s*(\d+)\s*\^\s*(\d+)\s*$", re.I)
FORMAT_URLS = {"vmdk": "vmdk", "vhd": "vpc", "vhdx": "vhdx", "vdi": "vdi", "qcow": "qcow2", "raw": "raw"}

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_comments=True, remove_pis=True)


@dataclass
class OvfDisk:
    disk_id: str
    href: str                  # the file name in the package
    capacity: int | None       # bytes, as the descriptor says
    format: str | None         # the qemu format its ovf:format URL names (vmdk ...), None if unsaid
    compression: str | None    # References/File ovf:compression (gzip): refused by the import
    chunked: bool              # References/File ovf:chunkSize: the file is split in parts; refused
    address: int               # order on its controller, for a stable disk order


@dataclass
class OvfNic:
    model: str | None          # E1000, VmxNet3, PCNet32 ... as written
    network: str | None
    mac: str | None


@dataclass
class OvfSystem:
    name: str | None
    vcpus: int | None
    memory_mib: int | None
    disks: list[OvfDisk] = field(default_factory=list)
    nics: list[OvfNic] = field(default_factory=list)
    cdroms: int = 0
    os_id: int | None = None            # CIM operating system type number
    os_type: str | None = None          # vmw:osType, e.g. debian11_64Guest, windows9_64Guest
    os_description: str | None = None
    firmware: str | None = None         # bios | uefi when the exporter says
    files: dict[str, dict[str, str | None]] = field(default_factory=dict)  # file id -> href, compression, chunkSize


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _attr(el: etree._Element, name: str) -> str | None:
    for ns in OVF_NS:
        value = el.get(f"{{{ns}}}{name}")
        if value is not None:
            return value
    return el.get(name)


def _child_text(el: etree._Element, name: str) -> str | None:
    for child in el:
        if _local(child) == name and child.text is not None:
            return child.text.strip()
    return None


def _units(text: str | None, default: int) -> int:
    if not text:
        return default
    m = _POW.match(text)
    if m:
        return int(m.group(1)) ** int(m.group(2))
    return _UNITS.get(text.strip().lower().replace("byte * ", ""), default)


def parse_envelope(data: bytes, where: str) -> etree._Element:
    """The <Envelope> element of an OVF descriptor; InvalidInput naming what is wrong otherwise."""
    if len(data) > MAX_OVF_BYTES:
        raise InvalidInput(f"{where} is {len(data)} bytes; an OVF descriptor is a few kilobytes (refused above "
                           f"{MAX_OVF_BYTES // 1024**2} MiB)", hint="check that this is an OVF descriptor")
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise InvalidInput(f"{where} declares a DOCTYPE or XML entities; refused (an OVF descriptor needs none, "
                           "and entity expansion is how 'billion laughs' files exhaust memory)",
                           hint="export the VM again from its hypervisor, or remove the <!DOCTYPE ...> part")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as err:
        raise InvalidInput(f"{where} is not well-formed XML: {err}",
                           hint="the package may be damaged; export the VM again") from err
    if root.getroottree().docinfo.internalDTD is not None:
        raise InvalidInput(f"{where} carries a DTD; refused", hint="remove the <!DOCTYPE ...> part")
    if _local(root) != "Envelope" or etree.QName(root).namespace not in OVF_NS:
        raise InvalidInput(f"{where} is not an OVF envelope (root <{_local(root)}>)",
                           hint="give the .ovf descriptor or the .ova package of an exported VM")
    return root


def _find(root: etree._Element, name: str) -> list[etree._Element]:
    return [el for el in root.iter() if _local(el) == name]


def read_ovf(data: bytes, where: str) -> OvfSystem:
    """The first VirtualSystem of the descriptor ``data`` (``where`` names it in errors)."""
    root = parse_envelope(data, where)
    files = {_attr(f, "id") or "": {"href": _attr(f, "href"), "compression": _attr(f, "compression"),
                                     "chunkSize": _attr(f, "chunkSize")} for f in _find(root, "File")}
    disk_section = {_attr(d, "diskId") or "": d for d in _find(root, "Disk")}
    systems = _find(root, "VirtualSystem")
    if not systems:
        raise InvalidInput(f"{where} has no VirtualSystem", hint="an OVF of one VM is needed (not a vApp of none)")
    vs = systems[0]
    system = OvfSystem(name=_attr(vs, "id") or _child_text(vs, "Name"), vcpus=None, memory_mib=None, files=files)
    for item in (i for i in vs.iter() if _local(i) in ("Item", "StorageItem", "EthernetPortItem")):
        _item(system, item, disk_section, files, where)
    for os_section in (s for s in vs.iter() if _local(s) == "OperatingSystemSection"):
        os_id = _attr(os_section, "id")
        system.os_id = int(os_id) if os_id and os_id.isdigit() else None
        system.os_type = os_section.get(f"{{{VMW_NS}}}osType")
        system.os_description = _child_text(os_section, "Description")
    for cfg in (c for c in vs.iter() if _local(c) == "Config" and c.get(f"{{{VMW_NS}}}key") == "firmware"):
        value = (cfg.get(f"{{{VMW_NS}}}value") or "").lower()
        system.firmware = "uefi" if value == "efi" else "bios" if value == "bios" else None
    for fw in (f for f in vs.iter() if _local(f) == "Firmware" and etree.QName(f).namespace == VBOX_NS):
        system.firmware = "uefi" if (fw.get("type") or "").upper().startswith("EFI") else "bios"
    system.disks.sort(key=lambda d: d.address)
    return system


def _item(system: OvfSystem, item: etree._Element, disks: dict[str, etree._Element],
          files: dict[str, dict[str, str | None]], where: str) -> None:
    values = {_local(c): (c.text or "").strip() for c in item if isinstance(c.tag, str)}
    kind = values.get("ResourceType", "")
    quantity = values.get("VirtualQuantity", "")
    if kind == "3" and quantity.isdigit():
        system.vcpus = int(quantity)
    elif kind == "4" and quantity.isdigit():
        system.memory_mib = int(quantity) * _units(values.get("AllocationUnits"), 1024**2) // 1024**2
    elif kind == "10":
        system.nics.append(OvfNic(model=values.get("ResourceSubType") or None,
                                  network=values.get("Connection") or None, mac=values.get("Address") or None))
    elif kind in ("15", "16"):
        system.cdroms += 1
    elif kind == "17":
        host = values.get("HostResource", "")
        ref = host.rsplit("/", 1)[-1] if host.startswith(("ovf:/disk/", "/disk/")) else None
        if ref is None and host.startswith(("ovf:/file/", "/file/")):
            file_id = host.rsplit("/", 1)[-1]
            system.disks.append(_disk(file_id, files, None, where, len(system.disks)))
            return
        disk = disks.get(ref or "")
        if disk is None:
            raise InvalidInput(f"{where}: disk item {values.get('ElementName') or ''!r} refers to {host!r}, which "
                               "its DiskSection does not define", hint="the descriptor is incomplete; export again")
        address = values.get("AddressOnParent", "")
        system.disks.append(_disk(_attr(disk, "fileRef") or "", files, disk, where,
                                  int(address) if address.isdigit() else len(system.disks)))


def _disk(file_id: str, files: dict[str, dict[str, str | None]], disk: etree._Element | None, where: str,
          address: int) -> OvfDisk:
    ref = files.get(file_id) or {}
    href = ref.get("href")
    if not href:
        raise InvalidInput(f"{where}: a disk refers to file {file_id!r}, which its References do not list",
                           hint="the descriptor is incomplete; export the VM again")
    capacity = fmt = None
    if disk is not None:
        cap = _attr(disk, "capacity") or ""
        capacity = int(cap) * _units(_attr(disk, "capacityAllocationUnits"), 1) if cap.isdigit() else None
        url = (_attr(disk, "format") or "").lower()
        fmt = next((q for key, q in FORMAT_URLS.items() if key in url.rsplit("/", 1)[-1]), None) if url else None
    return OvfDisk(disk_id=file_id, href=href, capacity=capacity, format=fmt, compression=ref.get("compression"),
                   chunked=bool(ref.get("chunkSize")), address=address)
