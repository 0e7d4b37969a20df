"""The transient domain kvmkit boots on a remote host to learn whether KVM really runs guests there."""

from __future__ import annotations

from lxml import etree


def kvm_probe_domain(name: str, kernel: str, initrd: str, cmdline: str, *, memory_mib: int = 128) -> str:
    """A one-vCPU ``type='kvm'`` domain booting ``kernel`` directly, its serial port on a pty console."""
    dom = etree.Element("domain", type="kvm")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64").text = "hvm"
    etree.SubElement(os_el, "kernel").text = kernel
    etree.SubElement(os_el, "initrd").text = initrd
    etree.SubElement(os_el, "cmdline").text = cmdline
    etree.SubElement(dom, "on_poweroff").text = "destroy"
    etree.SubElement(dom, "on_reboot").text = "destroy"
    etree.SubElement(dom, "on_crash").text = "destroy"
    devices = etree.SubElement(dom, "devices")
    serial = etree.SubElement(devices, "serial", type="pty")
    etree.SubElement(serial, "target", port="0")
    console = etree.SubElement(devices, "console", type="pty")
    etree.SubElement(console, "target", type="serial", port="0")
    etree.SubElement(devices, "memballoon", model="none")
    return etree.tostring(dom, encoding="unicode")
