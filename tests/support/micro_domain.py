"""Domain XML for micro-guest test VMs, built with lxml (test scaffolding for tiers 2 and 3).

Product code creates VMs through kvmkit's spec and XML modules; this builder exists so that tests of
other areas (networks, storage, tuning) can boot a guest with exactly the devices they need.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lxml import etree


@dataclass
class MicroDomain:
    name: str
    kernel: str
    initrd: str
    cmdline: str
    serial_log: str
    virt_type: str = "qemu"
    memory_mib: int = 256
    max_memory_mib: int | None = None
    vcpus: int = 1
    max_vcpus: int | None = None
    disks: list[dict[str, str]] = field(default_factory=list)  # {"path":..., "format": "qcow2"}
    networks: list[dict[str, str]] = field(default_factory=list)  # {"network": "default"} or {"bridge": "br0"}
    extra_cmdline: str = ""

    def xml(self) -> str:
        dom = etree.Element("domain", type=self.virt_type)
        etree.SubElement(dom, "name").text = self.name
        maxmem = self.max_memory_mib or self.memory_mib
        etree.SubElement(dom, "memory", unit="MiB").text = str(maxmem)
        etree.SubElement(dom, "currentMemory", unit="MiB").text = str(self.memory_mib)
        maxcpu = self.max_vcpus or self.vcpus
        etree.SubElement(dom, "vcpu", placement="static", current=str(self.vcpus)).text = str(maxcpu)
        os_el = etree.SubElement(dom, "os")
        etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
        etree.SubElement(os_el, "kernel").text = self.kernel
        etree.SubElement(os_el, "initrd").text = self.initrd
        etree.SubElement(os_el, "cmdline").text = f"{self.cmdline} {self.extra_cmdline}".strip()
        features = etree.SubElement(dom, "features")
        etree.SubElement(features, "acpi")
        etree.SubElement(features, "apic")
        devices = etree.SubElement(dom, "devices")
        for i, disk in enumerate(self.disks):
            d = etree.SubElement(devices, "disk", type="file", device="disk")
            etree.SubElement(d, "driver", name="qemu", type=disk.get("format", "qcow2"))
            etree.SubElement(d, "source", file=disk["path"])
            etree.SubElement(d, "target", dev=f"vd{chr(ord('a') + i)}", bus="virtio")
        for net in self.networks:
            kind = "bridge" if "bridge" in net else "network"
            iface = etree.SubElement(devices, "interface", type=kind)
            etree.SubElement(iface, "source", **{kind: net[kind]})
            if "mac" in net:
                etree.SubElement(iface, "mac", address=net["mac"])
            etree.SubElement(iface, "model", type="virtio")
        serial = etree.SubElement(devices, "serial", type="pty")
        etree.SubElement(serial, "log", file=self.serial_log, append="off")
        etree.SubElement(serial, "target", port="0")
        console = etree.SubElement(devices, "console", type="pty")
        etree.SubElement(console, "target", type="serial", port="0")
        etree.SubElement(devices, "memballoon", model="virtio")
        return etree.tostring(dom, encoding="unicode")
