"""Crafting small import packages for tests: a minimal VMware-style OVF (VirtualSystem with CPUs, memory,
disks and NICs) written with lxml, OVAs (a tar with the .ovf first), manifests, and broken variants."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from lxml import etree

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW = "http://www.vmware.com/schema/ovf"
VMDK_STREAM = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


def ovf_xml(name: str, disks: list[tuple[str, int]], *, vcpus: int = 2, memory_mib: int = 1024, nics: int = 1,
            firmware: str | None = None, os_type: str = "debian11_64Guest", disk_format: str = VMDK_STREAM) -> bytes:
    """An OVF descriptor: ``disks`` is [(href, capacity in bytes)]."""
    q = lambda ns, tag: f"{{{ns}}}{tag}"  # noqa: E731
    env = etree.Element(q(OVF, "Envelope"), nsmap={None: OVF, "ovf": OVF, "rasd": RASD, "vssd": VSSD, "vmw": VMW})
    refs = etree.SubElement(env, q(OVF, "References"))
    section = etree.SubElement(env, q(OVF, "DiskSection"))
    etree.SubElement(section, q(OVF, "Info")).text = "Virtual disk information"
    for i, (href, capacity) in enumerate(disks, 1):
        etree.SubElement(refs, q(OVF, "File"), {q(OVF, "id"): f"file{i}", q(OVF, "href"): href})
        etree.SubElement(section, q(OVF, "Disk"), {
            q(OVF, "diskId"): f"vmdisk{i}", q(OVF, "fileRef"): f"file{i}", q(OVF, "capacity"): str(capacity),
            q(OVF, "capacityAllocationUnits"): "byte", q(OVF, "format"): disk_format})
    nets = etree.SubElement(env, q(OVF, "NetworkSection"))
    etree.SubElement(nets, q(OVF, "Info")).text = "The list of logical networks"
    etree.SubElement(nets, q(OVF, "Network"), {q(OVF, "name"): "VM Network"})
    vs = etree.SubElement(env, q(OVF, "VirtualSystem"), {q(OVF, "id"): name})
    etree.SubElement(vs, q(OVF, "Info")).text = "A virtual machine"
    etree.SubElement(vs, q(OVF, "Name")).text = name
    os_section = etree.SubElement(vs, q(OVF, "OperatingSystemSection"), {q(OVF, "id"): "96", q(VMW, "osType"): os_type})
    etree.SubElement(os_section, q(OVF, "Info")).text = "The kind of installed guest operating system"
    hw = etree.SubElement(vs, q(OVF, "VirtualHardwareSection"))
    etree.SubElement(hw, q(OVF, "Info")).text = "Virtual hardware requirements"
    system = etree.SubElement(hw, q(OVF, "System"))
    etree.SubElement(system, q(VSSD, "ElementName")).text = "Virtual Hardware Family"
    etree.SubElement(system, q(VSSD, "InstanceID")).text = "0"
    etree.SubElement(system, q(VSSD, "VirtualSystemType")).text = "vmx-13"
    ids = iter(range(1, 100))

    def item(**fields: str) -> None:
        el = etree.SubElement(hw, q(OVF, "Item"))
        for key, value in sorted({**fields, "InstanceID": str(next(ids))}.items()):
            etree.SubElement(el, q(RASD, key)).text = value

    item(ResourceType="3", VirtualQuantity=str(vcpus), ElementName=f"{vcpus} virtual CPU(s)",
         AllocationUnits="hertz * 10^6")
    item(ResourceType="4", VirtualQuantity=str(memory_mib), ElementName=f"{memory_mib}MB of memory",
         AllocationUnits="byte * 2^20")
    item(ResourceType="6", ElementName="SCSI Controller 0", ResourceSubType="lsilogic", Address="0")
    for i in range(1, len(disks) + 1):
        item(ResourceType="17", ElementName=f"Hard Disk {i}", HostResource=f"ovf:/disk/vmdisk{i}", Parent="3",
             AddressOnParent=str(i - 1))
    for i in range(1, nics + 1):
        item(ResourceType="10", ElementName=f"Network adapter {i}", ResourceSubType="VmxNet3",
             Connection="VM Network", AddressOnParent=str(6 + i), AutomaticAllocation="true")
    if firmware:
        etree.SubElement(hw, q(VMW, "Config"), {q(OVF, "required"): "false", q(VMW, "key"): "firmware",
                                                q(VMW, "value"): firmware})
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def manifest(files: dict[str, bytes | Path]) -> bytes:
    lines = []
    for name, data in files.items():
        digest = hashlib.sha256(data.read_bytes() if isinstance(data, Path) else data).hexdigest()
        lines.append(f"SHA256({name})= {digest}\n")
    return "".join(lines).encode()


def write_ova(path: Path, members: list[tuple[str, bytes | Path]], *, kinds: dict[str, str] | None = None) -> Path:
    """A tar of ``members`` in order: bytes or a file's contents; ``kinds`` makes some of them a symlink
    ('sym:TARGET') or hard link ('hard:TARGET') instead."""
    kinds = kinds or {}
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            kind = kinds.get(name, "")
            if kind.startswith(("sym:", "hard:")):
                info.type = tarfile.SYMTYPE if kind.startswith("sym:") else tarfile.LNKTYPE
                info.linkname = kind.split(":", 1)[1]
                tar.addfile(info)
                continue
            if isinstance(data, Path):
                info.size = data.stat().st_size
                with data.open("rb") as fh:
                    tar.addfile(info, fh)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
