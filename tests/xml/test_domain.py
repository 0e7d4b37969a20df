"""Domain XML: generated XML passes libvirt's schema; existing XML round-trips with only the changed field
different (compared after C14N canonicalisation), offline and through a real libvirtd."""

from __future__ import annotations

import subprocess
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmkit.spec.vm import parse_spec
from kvmkit.xml.domain import apply_spec, spec_to_xml, validate_with_schema, xml_to_spec

DATA = Path(__file__).parent / "data"
VMM_XML = (DATA / "virt-manager.xml").read_text()
KVMKIT_NS = "https://kvmkit.dev/xmlns/vm/1"


def c14n(xml: str | etree._Element) -> bytes:
    root = etree.fromstring(xml.encode()) if isinstance(xml, str) else xml
    return etree.tostring(root, method="c14n")


def wide_spec(**over):
    data = dict(
        name="wide", uuid="12345678-1234-1234-1234-123456789abc", title="Wide", description="every device",
        virt_type="qemu", memory_mib="1G", max_memory_mib="2G", vcpus=2, max_vcpus=4, sockets=1, cores=2,
        threads=2, cpu_mode="custom", cpu_model="qemu64", cpuset="0-1", vcpupin={0: "0", 1: "1"},
        emulatorpin="0", numatune={"mode": "strict", "nodeset": "0"}, hugepages=True, nosharepages=True,
        machine="pc", boot=["cdrom", "hd"], on_poweroff="destroy", on_reboot="restart",
        on_crash="coredump-destroy",
        disks=[{"path": "/var/lib/kvmkit/a.qcow2", "format": "qcow2", "cache": "none", "io": "native"},
               {"path": "/dev/sdz", "format": "raw", "bus": "virtio-scsi", "shareable": True},
               {"pool": "default", "volume": "v1", "format": "raw", "bus": "sata", "readonly": True},
               {"path": "/var/lib/kvmkit/b.raw", "format": "raw", "bus": "ide", "cache": "unsafe", "io": "threads"},
               {"device": "cdrom", "path": "/var/lib/kvmkit/x.iso"}],
        nics=[{"source": "default", "mac": "52:54:00:00:00:01"},
              {"type": "bridge", "source": "br0", "model": "e1000e", "mac": "52:54:00:00:00:02"},
              {"type": "direct", "source": "eth0", "mode": "vepa", "model": "rtl8139"}],
        graphics={"type": "spice", "password": "pw", "listen": "0.0.0.0"},
        serial_log="/var/log/kvmkit/wide.serial.log", metadata={"task": "t1", "template": "base"},
    )
    data.update(over)
    return parse_spec(data)


@pytest.mark.fast
@pytest.mark.parametrize("over", [
    {}, {"firmware": "uefi", "machine": None, "graphics": {"type": "vnc", "port": 5999}},
    {"kernel": "/boot/k", "initrd": "/boot/i", "cmdline": "console=ttyS0", "boot": [], "balloon": False,
     "rng": False, "guest_agent": False, "serial": False, "graphics": None, "cpu_mode": "host-model",
     "cpu_model": None},
])
def test_generated_xml_passes_libvirt_schema(over, tmp_path):
    xml = spec_to_xml(wide_spec(**over))
    assert validate_with_schema(xml) == []
    path = tmp_path / "d.xml"
    path.write_text(xml)
    res = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.fast
def test_spec_xml_spec_round_trip():
    spec = wide_spec()
    again = xml_to_spec(spec_to_xml(spec))
    want = spec.model_dump()
    got = again.model_dump()
    # targets are assigned on the way out
    assert [d["target"] for d in got["disks"]] == ["vda", "sda", "sdb", "hda", "sdc"]
    for d in got["disks"]:
        d["target"] = None
    assert want["disks"][4]["format"] is None and got["disks"][4]["format"] == "raw"  # always explicit
    got["disks"][4]["format"] = None
    assert got == want
    assert apply_spec(spec_to_xml(spec), again) == spec_to_xml(spec)


@pytest.mark.fast
def test_virt_manager_xml_parses():
    spec = xml_to_spec(VMM_XML)
    assert (spec.name, spec.memory_mib, spec.vcpus, spec.virt_type) == ("vmm-guest", 2048, 2, "kvm")
    assert spec.cpu_mode == "host-passthrough" and spec.machine == "pc-q35-7.2"
    assert [d.device for d in spec.disks] == ["disk", "cdrom"]
    assert spec.nics[0].mac == "52:54:00:6b:3c:58"
    assert spec.graphics is not None and spec.graphics.type == "spice"
    assert spec.guest_agent and spec.rng and spec.balloon and spec.metadata == {}


@pytest.mark.fast
def test_unchanged_spec_changes_nothing():
    assert c14n(apply_spec(VMM_XML, xml_to_spec(VMM_XML))) == c14n(VMM_XML)


@pytest.mark.fast
def test_change_memory_keeps_everything_else():
    spec = xml_to_spec(VMM_XML)
    out = apply_spec(VMM_XML, spec.updated(memory_mib=4096, max_memory_mib=4096))
    expected = etree.fromstring(VMM_XML.encode())
    expected.find("memory").text = str(4096 * 1024)
    expected.find("currentMemory").text = str(4096 * 1024)
    assert c14n(out) == c14n(expected)


@pytest.mark.fast
def test_change_one_device_keeps_unknown_devices_and_foreign_metadata():
    spec = xml_to_spec(VMM_XML)
    nic = spec.nics[0].model_copy(update={"model": "e1000e"})
    out = apply_spec(VMM_XML, spec.updated(nics=[nic.model_dump()], metadata={"task": "7"}))
    root = etree.fromstring(out.encode())
    expected = etree.fromstring(VMM_XML.encode())
    iface = expected.find("devices/interface")
    iface.find("model").set("type", "e1000e")  # its PCI <address> stays: e1000e is a PCI device too
    got_meta = root.find("metadata").find(f"{{{KVMKIT_NS}}}vm")
    assert got_meta is not None and got_meta.findtext(f"{{{KVMKIT_NS}}}task") == "7"
    root.find("metadata").remove(got_meta)
    assert c14n(root) == c14n(expected)


@pytest.mark.fast
def test_cpu_mode_change_drops_attributes_libvirt_refuses():
    spec = xml_to_spec(VMM_XML)
    root = etree.fromstring(apply_spec(VMM_XML, spec.updated(cpu_mode="host-model")).encode())
    assert root.find("cpu").attrib == {"mode": "host-model", "check": "none"}
    root = etree.fromstring(apply_spec(VMM_XML, spec.updated(cpu_model="EPYC", cpu_mode="custom")).encode())
    assert root.find("cpu").get("mode") == "custom" and root.findtext("cpu/model") == "EPYC"


@pytest.mark.fast
def test_disk_changes_touch_only_that_disk():
    spec = xml_to_spec(VMM_XML)
    disks = [d.model_dump() for d in spec.disks]
    disks[1]["path"] = "/var/lib/kvmkit/debian.iso"
    disks.append({"path": "/var/lib/kvmkit/data.raw", "format": "raw", "cache": "none"})
    out = apply_spec(VMM_XML, spec.updated(disks=disks))
    again = xml_to_spec(out)
    assert [d.target for d in again.disks] == ["vda", "sda", "vdb"]
    assert again.disks[1].path == "/var/lib/kvmkit/debian.iso"
    root = etree.fromstring(out.encode())
    assert root.find("devices/disk[2]/address").get("type") == "drive"  # kept: same bus
    assert root.find("devices/disk[1]/driver").get("discard") == "unmap"  # untouched disk untouched
    assert validate_with_schema(out) == []


@pytest.mark.fast
def test_libvirt_defined_xml_round_trips(conn, prefix):
    """Define the virt-manager XML on qemu:///system (as virsh define would), change memory through
    kvmkit, define again: libvirt's own XML differs only in the memory elements."""
    src = etree.fromstring(VMM_XML.encode())
    src.find("name").text = f"{prefix}vmm"
    src.remove(src.find("uuid"))
    src.set("type", "qemu")
    src.find("cpu").attrib.clear()
    src.find("cpu").set("mode", "host-model")  # host-passthrough needs KVM; this host may be TCG only
    src.find("os/type").set("machine", "q35")
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
    dom = conn.defineXML(etree.tostring(src, encoding="unicode"))
    # libvirt sorts the controllers it added on the first define only once the XML is defined again;
    # take its settled form (what `virsh dumpxml` shows after any edit) as the starting point
    dom = conn.defineXML(dom.XMLDesc(flags))
    before = dom.XMLDesc(flags)
    spec = xml_to_spec(before)
    conn.defineXML(apply_spec(before, spec.updated(memory_mib=1024, max_memory_mib=3072)))
    after = conn.lookupByName(f"{prefix}vmm").XMLDesc(flags)
    expected = etree.fromstring(before.encode())
    expected.find("memory").text = str(3072 * 1024)
    expected.find("currentMemory").text = str(1024 * 1024)
    assert c14n(after) == c14n(expected)
    assert xml_to_spec(after).metadata == {}
    assert etree.fromstring(after.encode()).find("metadata")[1].find("{https://example.org/other-app/1}owner").text \
        == "alice"


@pytest.mark.fast
def test_foreign_names_are_described_not_refused():
    root = etree.fromstring(VMM_XML.encode())
    root.find("name").text = "My Windows VM"
    assert xml_to_spec(etree.tostring(root, encoding="unicode")).name == "My Windows VM"


@pytest.mark.fast
def test_disks_kvmkit_does_not_model_are_left_alone():
    root = etree.fromstring(VMM_XML.encode())
    devices = root.find("devices")
    net_disk = etree.fromstring(
        "<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
        "<source protocol='nbd' name='x'><host name='h' port='10809'/></source><target dev='vdc' bus='virtio'/></disk>")
    devices.find("disk").addnext(net_disk)
    root.find("devices/disk/driver").set("cache", "default")
    xml = etree.tostring(root, encoding="unicode")
    spec = xml_to_spec(xml)
    assert [d.target for d in spec.disks] == ["vda", "sda"] and spec.disks[0].cache is None
    out = etree.fromstring(apply_spec(xml, spec.updated(disks=[spec.disks[1].model_dump()])).encode())
    assert [t.get("dev") for t in out.iterfind("devices/disk/target")] == ["vdc", "sda"]  # vda removed only
