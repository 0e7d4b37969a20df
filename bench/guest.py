"""Domain XML (lxml) for the micro-guest in the shapes the benchmarks need.

The harness defines its own guests through libvirt-python for the peer side and for set-up (lightweight
shut-off domains for listing, the template source for virt-clone, boot-variant trials). kvmkit's side
always goes through kvmkit itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


@dataclass
class MicroXML:
    name: str
    kernel: str
    initrd: str
    cmdline: str
    serial_log: str
    virt_type: str = "qemu"
    memory_mib: int = 256
    vcpus: int = 1
    machine: str = "pc"  # pc | q35 | microvm
    firmware: str = ""  # "" = SeaBIOS (or none for microvm), "efi" = OVMF
    disks: list[dict[str, str]] = field(default_factory=list)  # {"path":..., "format": "qcow2"}
    network: str = ""  # libvirt network name, "" = no NIC
    lean: bool = False  # no balloon, no USB, no PS/2 extras: fewer devices for firmware and kernel to probe
    extra_cmdline: str = ""

    def xml(self) -> str:
        mmio = self.machine == "microvm"
        dom = etree.Element("domain", type=self.virt_type)
        etree.SubElement(dom, "name").text = self.name
        etree.SubElement(dom, "memory", unit="MiB").text = str(self.memory_mib)
        etree.SubElement(dom, "vcpu", placement="static").text = str(self.vcpus)
        os_el = etree.SubElement(dom, "os")
        etree.SubElement(os_el, "type", arch="x86_64", machine=self.machine).text = "hvm"
        if self.firmware == "efi":
            etree.SubElement(os_el, "loader", readonly="yes", secure="no", type="pflash").text = OVMF_CODE
            etree.SubElement(os_el, "nvram", template=OVMF_VARS).text = (
                f"/var/lib/libvirt/qemu/nvram/{self.name}_VARS.fd")
        if self.kernel:
            etree.SubElement(os_el, "kernel").text = self.kernel
            etree.SubElement(os_el, "initrd").text = self.initrd
            cmdline = f"{self.cmdline} {self.extra_cmdline}".strip()
            etree.SubElement(os_el, "cmdline").text = cmdline
        else:  # boot from the first disk (a template made by bench.bootdisk)
            etree.SubElement(os_el, "boot", dev="hd")
        features = etree.SubElement(dom, "features")
        if not mmio:  # microvm with ACPI hung before any serial output in 4 of ~12 boots here (QEMU 7.2, TCG)
            etree.SubElement(features, "acpi")
        etree.SubElement(features, "apic")
        devices = etree.SubElement(dom, "devices")
        for i, disk in enumerate(self.disks):
            d = etree.SubElement(devices, "disk", type="file", device="disk")
            etree.SubElement(d, "driver", name="qemu", type=disk.get("format", "qcow2"))
            etree.SubElement(d, "source", file=disk["path"])
            etree.SubElement(d, "target", dev=f"vd{chr(ord('a') + i)}", bus="virtio")
            if mmio:
                etree.SubElement(d, "address", type="virtio-mmio")
        if self.network:
            iface = etree.SubElement(devices, "interface", type="network")
            etree.SubElement(iface, "source", network=self.network)
            etree.SubElement(iface, "model", type="virtio")
            if mmio:
                etree.SubElement(iface, "address", type="virtio-mmio")
        serial = etree.SubElement(devices, "serial", type="pty")
        etree.SubElement(serial, "log", file=self.serial_log, append="off")
        etree.SubElement(serial, "target", port="0")
        console = etree.SubElement(devices, "console", type="pty")
        etree.SubElement(console, "target", type="serial", port="0")
        if self.lean or mmio:
            etree.SubElement(devices, "controller", type="usb", model="none")
            etree.SubElement(devices, "memballoon", model="none")
        else:
            etree.SubElement(devices, "memballoon", model="virtio")
        return etree.tostring(dom, encoding="unicode")


def shell_domain_xml(name: str, virt_type: str = "qemu") -> str:
    """A lightweight shut-off domain (no devices) for the listing benchmarks."""
    dom = etree.Element("domain", type=virt_type)
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    return etree.tostring(dom, encoding="unicode")
