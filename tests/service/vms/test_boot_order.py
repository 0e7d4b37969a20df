"""The boot order of existing VMs (service/vms/boot_order.py): written to the definition through the XML
model, per-device <boot order> replaced, secrets and unmodelled elements kept, a running VM untouched."""

from __future__ import annotations

import subprocess

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import InvalidInput, NotFound
from kvmkit.service.vms import boot_order
from kvmkit.service.vms import resources as res

INACTIVE_SECURE = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE


def _define_plain(conn, name: str, disk: str) -> libvirt.virDomain:
    """A shut-off VM booting from its disk by a per-device <boot order='1'/>, with an empty CD-ROM drive, a
    VNC password and a sound card (which kvmkit's VM model does not describe)."""
    dom = etree.Element("domain", type="qemu")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    devices = etree.SubElement(dom, "devices")
    d = etree.SubElement(devices, "disk", type="file", device="disk")
    etree.SubElement(d, "driver", name="qemu", type="qcow2")
    etree.SubElement(d, "source", file=disk)
    etree.SubElement(d, "target", dev="vda", bus="virtio")
    etree.SubElement(d, "boot", order="1")
    cd = etree.SubElement(devices, "disk", type="file", device="cdrom")
    etree.SubElement(cd, "driver", name="qemu", type="raw")
    etree.SubElement(cd, "target", dev="sda", bus="sata")
    etree.SubElement(cd, "readonly")
    etree.SubElement(devices, "graphics", type="vnc", port="-1", listen="127.0.0.1", passwd="s3cr3t-v")
    etree.SubElement(devices, "sound", model="ich9")
    return conn.defineXML(etree.tostring(dom, encoding="unicode"))


@pytest.mark.guest
def test_boot_order_replaces_per_device_orders_and_keeps_the_rest(conn, prefix, workdir):
    disk = workdir / "boot.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    dom = _define_plain(conn, f"{prefix}boot", str(disk))
    out = boot_order.set_boot(conn, dom.name(), ["cdrom", "hd"])
    assert out["boot"] == ["cdrom", "hd"] and out["old_boot"] == [] and out["changed"]
    assert out["applies"] == "next start" and not out["running"] and out["config"] and not out["live"]
    assert out["warnings"] == []
    root = etree.fromstring(dom.XMLDesc(INACTIVE_SECURE).encode())
    assert [b.get("dev") for b in root.findall("os/boot")] == ["cdrom", "hd"]
    assert root.findall("devices/disk/boot") == []  # libvirt refuses both kinds together
    assert root.find("devices/graphics").get("passwd") == "s3cr3t-v"  # not lost on redefining
    assert root.find("devices/sound").get("model") == "ich9"
    from kvmkit.service.vms.query import show_vm

    assert show_vm(conn, dom.name())["boot"] == ["cdrom", "hd"]
    again = boot_order.set_boot(conn, dom.name(), ["cdrom", "hd"])
    assert not again["changed"]
    warned = boot_order.set_boot(conn, dom.name(), ["network", "hd"])  # no NIC: allowed, and said
    assert any("no NIC" in w for w in warned["warnings"])


@pytest.mark.guest
def test_bad_orders_are_refused_before_anything_changes(conn, micro_guest):
    guest = micro_guest("bootbad", start=False)
    before = guest.dom.XMLDesc(INACTIVE_SECURE)
    for boot, msg in (([], "empty"), (["hd", "hd"], "listed twice"), (["fd"], "invalid boot device 'fd'"),
                      (["usb"], "invalid boot device")):
        with pytest.raises(InvalidInput, match=msg):
            boot_order.set_boot(conn, guest.name, boot)
    with pytest.raises(InvalidInput, match="live"):  # the running VM's order cannot change
        res.set_resources(conn, guest.name, boot=["hd"], live=True, config=False)
    with pytest.raises(NotFound):
        boot_order.set_boot(conn, guest.name + "-none", ["hd"])
    assert guest.dom.XMLDesc(INACTIVE_SECURE) == before


@pytest.mark.guest
def test_a_running_vm_keeps_its_order_until_it_starts_again(conn, micro_guest):
    guest = micro_guest("bootrun")
    live_before = [b.get("dev") for b in etree.fromstring(guest.dom.XMLDesc(0).encode()).findall("os/boot")]
    out = res.set_resources(conn, guest.name, boot=["network", "hd"], autostart=False)
    change = next(c for c in out["changes"] if c["action"] == "set boot")
    assert change["running"] and change["applies"] == "next start"
    assert any("kernel directly" in w for w in change["warnings"])  # the micro-guest boots its kernel
    live = etree.fromstring(guest.dom.XMLDesc(0).encode())
    config = etree.fromstring(guest.dom.XMLDesc(INACTIVE_SECURE).encode())
    assert [b.get("dev") for b in live.findall("os/boot")] == live_before != ["network", "hd"]
    assert [b.get("dev") for b in config.findall("os/boot")] == ["network", "hd"]
    assert guest.dom.isActive()
