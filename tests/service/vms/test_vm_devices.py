"""Disk and NIC attach/detach, live (seen by the running micro-guest) and persistent."""

from __future__ import annotations

import re
import subprocess
import time

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.service.vms import devices as dev


def _run_in_guest(conn, guest, command: str, tag: str, timeout: float = 60) -> str:
    """Type ``command`` on the guest's serial shell; return what it printed after ``tag``."""
    mark = guest.log.offset()
    stream = conn.newStream(0)
    guest.dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    try:
        stream.send(f"\necho {tag}-$({command} | tr '\\n' ' ')-END\n".encode())
        match = guest.log.wait_for(rf"{tag}-([^$\n]*)-END", timeout=timeout, after=mark)
    finally:
        stream.abort()
    return match.group(1)


def _inactive(dom) -> etree._Element:
    return etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())


def _live(dom) -> etree._Element:
    return etree.fromstring(dom.XMLDesc(0).encode())


def _qcow2(path) -> str:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return str(path)


@pytest.mark.guest
def test_disk_attach_and_detach_live_and_persistent(conn, micro_guest, workdir):
    disk = _qcow2(workdir / "hot.qcow2")
    guest = micro_guest("hotdisk")
    guest.log.wait_status()
    assert "vda" not in _run_in_guest(conn, guest, "ls /sys/block", "KT-BLK0")
    result = dev.attach_disk(conn, guest.name, path=disk, fmt="qcow2")
    assert result["target"] == "vda" and result["live"] and result["config"]
    for root in (_live(guest.dom), _inactive(guest.dom)):
        el = root.find("./devices/disk[@device='disk']")
        assert el.find("source").get("file") == disk and el.find("driver").get("type") == "qcow2"
    deadline = time.monotonic() + 60
    while "vda" not in _run_in_guest(conn, guest, "ls /sys/block", "KT-BLK1"):
        assert time.monotonic() < deadline, "the guest never saw the hot-plugged disk"
        time.sleep(1)
    with pytest.raises(Conflict, match="already attached"):
        dev.attach_disk(conn, guest.name, path=disk, fmt="qcow2")
    out = dev.detach_disk(conn, guest.name, "vda", timeout=60)
    assert out["live"] and out["config"]
    assert _live(guest.dom).find("./devices/disk") is None
    assert _inactive(guest.dom).find("./devices/disk") is None
    assert "vda" not in _run_in_guest(conn, guest, "ls /sys/block", "KT-BLK2")
    # attached live only: a detach without --live/--config acts where the disk is
    assert not dev.attach_disk(conn, guest.name, path=disk, fmt="qcow2", live=True)["config"]
    assert _inactive(guest.dom).find("./devices/disk") is None
    out = dev.detach_disk(conn, guest.name, "vda", timeout=60)
    assert out["live"] and not out["config"]
    with pytest.raises(NotFound, match="disk vda is not attached to the running VM or the definition"):
        dev.detach_disk(conn, guest.name, "vda")


@pytest.mark.guest
def test_disk_errors_leave_the_vm_unchanged(conn, micro_guest, workdir):
    disk = _qcow2(workdir / "d.qcow2")
    guest = micro_guest("diskerr", start=False)
    before = etree.tostring(_inactive(guest.dom))
    with pytest.raises(InvalidInput, match="invalid disk format 'vmdk'"):
        dev.attach_disk(conn, guest.name, path=disk, fmt="vmdk")
    with pytest.raises(InvalidInput, match=r"d\.qcow2 is a qcow2 image, not raw"):
        dev.attach_disk(conn, guest.name, path=disk, fmt="raw")
    with pytest.raises(InvalidInput, match="does not exist"):
        dev.attach_disk(conn, guest.name, path=str(workdir / "missing.qcow2"), fmt="qcow2")
    with pytest.raises(InvalidState, match=r"cannot attach a disk live on VM .*: it is shut off"):
        dev.attach_disk(conn, guest.name, path=disk, fmt="qcow2", live=True)
    with pytest.raises(InvalidInput, match="invalid disk target"):
        dev.attach_disk(conn, guest.name, path=disk, fmt="qcow2", target="vd;x")
    assert etree.tostring(_inactive(guest.dom)) == before
    # stopped: persistent only, by default; explicit target and bus
    out = dev.attach_disk(conn, guest.name, path=disk, fmt="qcow2", target="sdb", bus="sata")
    assert out["config"] and not out["live"]
    el = _inactive(guest.dom).find("./devices/disk/target[@dev='sdb']")
    assert el is not None and el.get("bus") == "sata"
    with pytest.raises(Conflict, match="target sdb is already used"):
        dev.attach_disk(conn, guest.name, path=_qcow2(workdir / "e.qcow2"), fmt="qcow2", target="sdb", bus="sata")
    dev.detach_disk(conn, guest.name, "sdb")
    assert _inactive(guest.dom).find("./devices/disk") is None  # (libvirt keeps the SATA controller it added)


@pytest.mark.guest
def test_nic_attach_detach_and_mac_clash(conn, micro_guest, prefix):
    from kvmkit.service.vms.macs import generate_mac

    mac = generate_mac(conn)
    a = micro_guest("nica", networks=[{"network": "default", "mac": mac}])
    b = micro_guest("nicb", start=False)
    with pytest.raises(Conflict, match=a.name):
        dev.attach_nic(conn, b.name, network="default", mac=mac)
    with pytest.raises(InvalidInput, match="invalid MAC"):
        dev.attach_nic(conn, b.name, network="default", mac="01:00:5e:00:00:01")
    with pytest.raises(InvalidInput, match="exactly one of"):
        dev.attach_nic(conn, b.name)
    assert _inactive(b.dom).find("./devices/interface") is None
    a.log.wait_status()
    out = dev.attach_nic(conn, a.name, network="default")
    new_mac = out["mac"]
    assert re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", new_mac) and new_mac != mac
    assert out["live"] and out["config"]
    for root in (_live(a.dom), _inactive(a.dom)):
        assert root.find(f"./devices/interface/mac[@address='{new_mac}']") is not None
    deadline = time.monotonic() + 60
    while "eth1" not in _run_in_guest(conn, a, "ls /sys/class/net", "KT-NET1"):
        assert time.monotonic() < deadline, "the guest never saw the hot-plugged NIC"
        time.sleep(1)
    dev.detach_nic(conn, a.name, new_mac.upper(), timeout=60)
    for root in (_live(a.dom), _inactive(a.dom)):
        assert root.find(f"./devices/interface/mac[@address='{new_mac}']") is None
        assert root.find(f"./devices/interface/mac[@address='{mac}']") is not None
    # b (stopped): persistent attach with a generated MAC
    out = dev.attach_nic(conn, b.name, network="default", model="e1000e")
    assert out["config"] and not out["live"]
    assert _inactive(b.dom).find("./devices/interface/model").get("type") == "e1000e"
