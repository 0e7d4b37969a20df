"""Edits through apply_spec on domains kvmkit did not write: each result passes libvirt's RNG and is
defined by libvirt's test driver (which parses and post-validates like the qemu driver).

Every case here is one a corpus run of libvirt's own test XML found (tests/xml/test_corpus.py); the
documents below are written for these tests, in the shapes hand-made and virt-install-made domains have.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.xml.domain import apply_spec, xml_to_spec
from tests.xml.corpus import TestDriver, rng_problems


@pytest.fixture()
def driver() -> Iterator[TestDriver]:
    d = TestDriver()
    yield d
    d.close()


def domain(devices: str = "", *, os_extra: str = "", cpu: str = "", top: str = "", machine: str = "pc") -> str:
    return (f"<domain type='qemu'><name>edit</name><uuid>0b6c1bd6-5b3d-4e7e-9a57-6f4a9f0c1d20</uuid>{top}"
            "<memory unit='KiB'>524288</memory><currentMemory unit='KiB'>524288</currentMemory>"
            f"<vcpu placement='static'>2</vcpu><os><type arch='x86_64' machine='{machine}'>hvm</type>{os_extra}</os>"
            f"{cpu}<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>{devices}</devices></domain>")


def edited(xml: str, **changes: object) -> etree._Element:
    out = apply_spec(xml, xml_to_spec(xml).updated(**changes))
    assert rng_problems(out) is None
    return etree.fromstring(out.encode())


def defines(driver: TestDriver, root: etree._Element) -> None:
    assert driver.define(etree.tostring(root, encoding="unicode")) is None


DISK = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/var/lib/x/a.qcow2'/>"
        "<target dev='vda' bus='virtio'/>{extra}</disk>")


@pytest.mark.fast
def test_usb_off_removes_the_devices_that_need_usb(driver):
    xml = domain("<controller type='usb' index='0' model='piix3-uhci'/><input type='tablet' bus='usb'/>"
                 "<hostdev mode='subsystem' type='usb'><source><vendor id='0x1234'/><product id='0xbeef'/>"
                 "</source></hostdev><redirdev bus='usb' type='spicevmc'/><hub type='usb'/>"
                 "<input type='keyboard' bus='ps2'/><graphics type='spice' autoport='yes'/>")
    assert driver.define(xml) is None
    root = edited(xml, usb=False)
    devices = root.find("devices")
    assert [c.get("model") for c in devices.iterfind("controller[@type='usb']")] == ["none"]
    assert devices.find("input[@bus='usb']") is None and devices.find("hostdev") is None
    assert devices.find("redirdev") is None and devices.find("hub") is None
    assert devices.find("input[@bus='ps2']") is not None  # not a USB device: kept
    defines(driver, root)


@pytest.mark.fast
def test_usb_off_refuses_a_usb_disk():
    xml = domain(DISK.format(extra="").replace("dev='vda' bus='virtio'", "dev='sda' bus='usb'"))
    with pytest.raises(InvalidInput, match="disk sda is on the USB bus"):
        apply_spec(xml, xml_to_spec(xml).updated(usb=False))


@pytest.mark.fast
def test_boot_order_replaces_per_device_boot_elements(driver):
    xml = domain(DISK.format(extra="<boot order='1'/>") +
                 "<interface type='network'><source network='default'/><boot order='2'/></interface>")
    root = edited(xml, boot=["cdrom", "hd"])
    assert [b.get("dev") for b in root.iterfind("os/boot")] == ["cdrom", "hd"]
    assert root.find("devices/disk/boot") is None and root.find("devices/interface/boot") is None
    defines(driver, root)


@pytest.mark.fast
@pytest.mark.parametrize("listen", [
    "<graphics type='vnc' socket='/run/vnc/edit.sock'><listen type='socket' socket='/run/vnc/edit.sock'/></graphics>",
    "<graphics type='vnc' port='-1' autoport='yes'><listen type='network' network='default'/></graphics>",
    "<graphics type='spice' autoport='yes'><listen type='none'/></graphics>",
], ids=["socket", "network", "none"])
def test_graphics_listen_change_replaces_a_socket_or_network_listen(driver, listen):
    xml = domain(listen)
    kind = etree.fromstring(listen).get("type")
    root = edited(xml, graphics={"type": kind, "listen": "0.0.0.0"})
    gfx = root.find("devices/graphics")
    assert gfx.get("socket") is None and gfx.get("listen") == "0.0.0.0"
    assert gfx.find("listen").attrib == {"type": "address", "address": "0.0.0.0"}
    defines(driver, root)
    # a password alone leaves the listen as it was
    root = edited(xml, graphics={"type": kind, "password": "s3cret"})
    gfx = root.find("devices/graphics")
    assert gfx.get("passwd") == "s3cret"
    assert etree.tostring(gfx.find("listen")) == etree.tostring(etree.fromstring(listen).find("listen"))
    defines(driver, root)


@pytest.mark.fast
def test_serial_log_goes_before_a_virtio_console(driver):
    xml = domain("<console type='pty'><target type='virtio' port='0'/></console>")
    root = edited(xml, serial=True, serial_log="/var/log/kvmkit/edit.serial.log")
    consoles = root.findall("devices/console")
    assert [c.find("target").get("type") for c in consoles] == ["serial", "virtio"]
    assert root.find("devices/serial/log").get("file") == "/var/log/kvmkit/edit.serial.log"
    defines(driver, root)


@pytest.mark.fast
def test_disk_edit_keeps_the_one_scsi_controller(driver):
    scsi = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/var/lib/x/s.raw'/>"
            "<target dev='sda' bus='scsi'/><address type='drive' controller='0' bus='0' target='0' unit='0'/></disk>"
            "<controller type='scsi' index='0' model='lsilogic'/>")
    xml = domain(scsi)
    spec = xml_to_spec(xml)
    disks = [{**spec.disks[0].model_dump(), "cache": "writeback"}]
    root = edited(xml, disks=disks)
    assert len(root.findall("devices/controller[@type='scsi']")) == 1
    defines(driver, root)


@pytest.mark.fast
def test_new_scsi_disk_gets_a_free_address_beside_a_scsi_hostdev(driver):
    xml = domain("<controller type='scsi' index='0' model='virtio-scsi'/>"
                 "<hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host0'/>"
                 "<address bus='0' target='0' unit='0'/></source>"
                 "<address type='drive' controller='0' bus='0' target='0' unit='0'/></hostdev>")
    assert driver.define(xml) is None
    root = edited(xml, disks=[{"path": "/var/lib/x/new.qcow2", "format": "qcow2", "bus": "virtio-scsi"}])
    disk = root.find("devices/disk")
    assert disk.find("target").get("dev") == "sda"
    assert disk.find("address").attrib == {"type": "drive", "controller": "0", "bus": "0", "target": "0",
                                           "unit": "1"}
    defines(driver, root)


@pytest.mark.fast
def test_bios_to_uefi_drops_the_manual_loader(driver):
    xml = domain(os_extra="<loader type='rom'>/usr/share/seabios/bios.bin</loader>")
    root = edited(xml, firmware="uefi")
    assert root.find("os").get("firmware") == "efi" and root.find("os/loader") is None
    # plain UEFI says "no Secure Boot", or libvirt's auto-selection would pick the secure-boot OVMF
    assert [(f.get("name"), f.get("enabled")) for f in root.iterfind("os/firmware/feature")] == \
        [("secure-boot", "no")]
    defines(driver, root)


@pytest.mark.fast
def test_host_passthrough_drops_model_only_children(driver):
    xml = domain(cpu="<cpu mode='custom' match='exact'><model fallback='allow'>qemu64</model><vendor>AMD</vendor>"
                 "<feature policy='require' name='sse4.2'/><numa><cell id='0' cpus='0-1' memory='524288' "
                 "unit='KiB'/></numa></cpu>")
    root = edited(xml, cpu_mode="host-passthrough", cpu_model=None)
    cpu = root.find("cpu")
    assert cpu.get("mode") == "host-passthrough" and cpu.find("model") is None and cpu.find("vendor") is None
    assert cpu.find("feature") is not None and cpu.find("numa/cell") is not None  # not the model's: kept
    defines(driver, root)
    # and back to a named model: a passthrough-only cache mode goes
    xml = domain(cpu="<cpu mode='host-passthrough'><cache mode='passthrough'/></cpu>")
    root = edited(xml, cpu_mode="custom", cpu_model="qemu64")
    assert root.find("cpu/cache") is None and root.findtext("cpu/model") == "qemu64"
    defines(driver, root)


@pytest.mark.fast
def test_vcpu_change_keeps_numa_cells_and_drops_a_topology_that_no_longer_fits(driver):
    xml = domain(cpu="<cpu><topology sockets='1' dies='2' cores='1' threads='1'/><numa><cell id='0' cpus='0-1' "
                 "memory='524288' unit='KiB'/></numa></cpu>")
    spec = xml_to_spec(xml)
    assert spec.sockets is None  # dies > 1: a topology the spec cannot hold
    root = edited(xml, vcpus=1, max_vcpus=1)
    assert root.find("cpu/topology") is None and root.find("cpu/numa/cell") is not None
    root = edited(xml, title="only the title")
    assert root.find("cpu/topology").get("dies") == "2"


@pytest.mark.fast
def test_nic_model_change_keeps_its_pci_address(driver):
    nic = ("<interface type='network'><mac address='52:54:00:12:34:56'/><source network='default'/>"
           "<model type='virtio'/><driver name='vhost' queues='2'/>"
           "<address type='pci' domain='0x0000' bus='0x00' slot='0x07' function='0x0'/></interface>")
    xml = domain(nic)
    nics = [{**xml_to_spec(xml).nics[0].model_dump(), "model": "e1000e"}]
    root = edited(xml, nics=nics)
    iface = root.find("devices/interface")
    assert iface.find("model").get("type") == "e1000e" and iface.find("address").get("slot") == "0x07"
    assert iface.find("driver") is None  # virtio-net settings
    defines(driver, root)


@pytest.mark.fast
def test_graphics_port_on_a_socket_listen_listens_on_an_address(driver):
    xml = domain("<graphics type='vnc' socket='/run/vnc/edit.sock'/>")
    root = edited(xml, graphics={"type": "vnc", "port": 5977})
    gfx = root.find("devices/graphics")
    assert (gfx.get("port"), gfx.get("socket"), gfx.find("listen").get("type")) == ("5977", None, "address")
    defines(driver, root)


@pytest.mark.fast
def test_serial_off_removes_every_serial(driver):
    xml = domain("<serial type='pty'><target port='0'/></serial><serial type='tcp'><source mode='bind' "
                 "host='127.0.0.1' service='4555'/><target port='1'/></serial><console type='pty'>"
                 "<target type='serial' port='0'/></console>")
    root = edited(xml, serial=False)
    assert root.find("devices/serial") is None and root.find("devices/console") is None
    assert xml_to_spec(etree.tostring(root, encoding="unicode")).serial is False
    defines(driver, root)


@pytest.mark.fast
def test_cache_change_of_a_file_disk_under_dev_keeps_it_a_file_disk(driver):
    xml = domain(DISK.format(extra="").replace("/var/lib/x/a.qcow2", "/dev/vg0/data").replace("qcow2'", "raw'"))
    disks = [{**xml_to_spec(xml).disks[0].model_dump(), "cache": "none"}]
    root = edited(xml, disks=disks)
    disk = root.find("devices/disk")
    assert disk.get("type") == "file" and disk.find("source").get("file") == "/dev/vg0/data"
    assert xml_to_spec(etree.tostring(root, encoding="unicode")).disks[0].cache == "none"
    defines(driver, root)


@pytest.mark.fast
def test_memory_of_a_numa_vm_is_refused_with_a_hint():
    xml = domain(cpu="<cpu><numa><cell id='0' cpus='0-1' memory='524288' unit='KiB'/></numa></cpu>")
    with pytest.raises(InvalidInput, match="sum of its 1 NUMA cell"):
        apply_spec(xml, xml_to_spec(xml).updated(memory_mib=1024, max_memory_mib=1024))
    root = edited(xml, memory_mib=256)  # the current (balloon) size is the VM's own
    assert root.findtext("currentMemory") == str(256 * 1024)


# ------------------------------------------------------------------ reading never fails


@pytest.mark.fast
@pytest.mark.parametrize("case", ["dies", "failover", "initrd", "targets", "mac", "current"])
def test_valid_domains_always_read(driver, case):
    xml = {
        "dies": domain(cpu="<cpu><topology sockets='1' dies='2' cores='1' threads='1'/></cpu>"),
        "failover": domain(
            "<interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/>"
            "<model type='virtio'/><teaming type='persistent'/><alias name='ua-backup0'/></interface>"
            "<interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/>"
            "<model type='virtio'/><teaming type='transient' persistent='ua-backup0'/></interface>"),
        "initrd": domain(os_extra="<initrd>/boot/initrd.img</initrd>"),
        "targets": domain(DISK.format(extra="") + DISK.format(extra="").replace("a.qcow2", "b.qcow2")),
        "mac": domain("<interface type='network'><mac address='52:54:00:aa:bb:01'/><source network='a'/></interface>"
                      "<interface type='bridge'><mac address='52:54:00:aa:bb:01'/><source bridge='br0'/></interface>"),
        "current": domain().replace("<currentMemory unit='KiB'>524288", "<currentMemory unit='KiB'>1048576"),
    }[case]
    if case != "targets":  # libvirt refuses two disks on one target; kvmkit still describes it
        assert driver.define(xml) is None
    spec = xml_to_spec(xml)
    assert spec.name == "edit"
    assert etree.tostring(etree.fromstring(apply_spec(xml, spec).encode()), method="c14n") == \
        etree.tostring(etree.fromstring(xml.encode()), method="c14n")
    if case == "failover":
        assert [n.mac for n in spec.nics] == ["52:54:00:aa:bb:cc"]
    if case == "initrd":
        assert spec.initrd is None and spec.kernel is None
    if case == "current":
        assert spec.memory_mib == spec.max_memory_mib == 512
