"""Power and life of VMs: state errors on test:///default, real behaviour with micro-guests on qemu:///system."""

from __future__ import annotations

import os
import subprocess
import time

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound, OperationFailed
from kvmkit.service.vms import lifecycle as lc


def _define_test_vm(test_conn, name: str) -> libvirt.virDomain:
    root = etree.Element("domain", type="test")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "memory", unit="MiB").text = "128"
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type").text = "hvm"
    return test_conn.defineXML(etree.tostring(root, encoding="unicode"))


@pytest.mark.fast
def test_state_errors_say_what_to_do(test_conn):
    _define_test_vm(test_conn, "off")
    with pytest.raises(InvalidState, match="cannot suspend VM off: it is shut off; start it first"):
        lc.suspend(test_conn, "off")
    with pytest.raises(InvalidState, match="cannot resume VM off: it is shut off"):
        lc.resume(test_conn, "off")
    with pytest.raises(InvalidState, match="cannot shut down VM off: it is shut off; it is already stopped"):
        lc.shutdown(test_conn, "off")
    with pytest.raises(InvalidState, match="cannot reboot VM off: it is shut off; start it"):
        lc.reboot(test_conn, "off")
    with pytest.raises(InvalidState, match="cannot destroy VM off"):
        lc.destroy(test_conn, "off")
    # the test driver's "test" domain runs
    with pytest.raises(InvalidState, match="cannot start VM test: it is running"):
        lc.start(test_conn, "test")
    with pytest.raises(InvalidState, match="cannot resume VM test: it is running"):
        lc.resume(test_conn, "test")
    assert lc.suspend(test_conn, "test")["state"] == "paused"
    with pytest.raises(InvalidState, match="cannot suspend VM test: it is paused; it is already paused"):
        lc.suspend(test_conn, "test")
    with pytest.raises(InvalidState, match="resume it first"):
        lc.shutdown(test_conn, "test")
    with pytest.raises(InvalidState, match="resume it"):
        lc.start(test_conn, "test")
    assert lc.resume(test_conn, "test")["state"] == "running"


@pytest.mark.fast
def test_unknown_vm_and_rename_rules(test_conn):
    with pytest.raises(NotFound, match="nope"):
        lc.start(test_conn, "nope")
    _define_test_vm(test_conn, "a")
    _define_test_vm(test_conn, "b")
    with pytest.raises(Conflict, match="a VM named b exists already"):
        lc.rename(test_conn, "a", "b")
    with pytest.raises(InvalidInput, match="new name"):
        lc.rename(test_conn, "a", "x/y")
    with pytest.raises(InvalidState, match="cannot rename VM test: it is running; shut it down first"):
        lc.rename(test_conn, "test", "t2")
    with pytest.raises(InvalidState, match=r"cannot delete VM test: it is running; shut it down first .* --force"):
        lc.delete(test_conn, "test")
    assert lc.rename(test_conn, "a", "c")["name"] == "c"
    assert {d.name() for d in test_conn.listAllDomains()} >= {"b", "c"}


@pytest.mark.guest
def test_suspend_stops_status_lines_and_resume_keeps_uptime(micro_guest):
    guest = micro_guest("pause")
    guest.log.wait_status()
    last = guest.log.wait_status(after=guest.log.offset())
    assert lc.suspend(guest.dom.connect(), guest.name)["state"] == "paused"
    suspended = time.monotonic()
    paused_at = guest.log.offset()
    time.sleep(10)  # five status periods: the claim is that none of them prints
    assert guest.log.statuses(paused_at) == [], "a paused guest kept printing status lines"
    assert guest.log.text().count("KVMKIT-STATUS") == len(guest.log.statuses())
    before = guest.log.statuses()[-1]
    assert before.uptime >= last.uptime
    assert lc.resume(guest.dom.connect(), guest.name)["state"] == "running"
    paused_for = time.monotonic() - suspended
    after = guest.log.wait_status(after=paused_at)
    # uptime continues from where it stopped: not reset, and the pause did not count as guest time (had it
    # counted, the guest's clock would be at least `paused_for` past the status printed before the pause;
    # it is one status period past it, plus however long a loaded host kept the guest from printing)
    assert before.uptime < after.uptime < before.uptime + paused_for, (before, after, paused_for)


@pytest.mark.guest
def test_graceful_shutdown_without_force(conn, micro_guest):
    guest = micro_guest("acpi")
    guest.log.wait_for("KVMKIT-STATUS")
    result = lc.shutdown(conn, guest.name, timeout=60)
    assert result["forced"] is False and result["state"] == "shut-off"
    assert guest.dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF
    assert "KVMKIT-POWEROFF" in guest.log.text()


@pytest.mark.guest
def test_shutdown_timeout_is_an_error_unless_forced(conn, micro_guest):
    guest = micro_guest("slow")
    guest.log.wait_for("KVMKIT-STATUS")
    lc.suspend(conn, guest.name)  # a paused guest cannot react to the power button
    with pytest.raises(InvalidState, match="paused guest cannot react"):
        lc.shutdown(conn, guest.name, timeout=1)
    result = lc.shutdown(conn, guest.name, timeout=1, force=True)
    assert result["forced"] is True and not guest.dom.isActive()
    lc.start(conn, guest.name)
    guest.log.wait_for("KVMKIT-GUEST-READY")
    with pytest.raises(OperationFailed, match=r"did not shut down within 0 s.*still running"):
        lc.shutdown(conn, guest.name, timeout=0)


@pytest.mark.guest
def test_reboot_restarts_the_guest(conn, micro_guest):
    guest = micro_guest("reboot")
    guest.log.wait_for("KVMKIT-STATUS")
    mark = guest.log.offset()
    lc.reboot(conn, guest.name)
    guest.log.wait_for("KVMKIT-GUEST-READY", after=mark)
    assert guest.dom.isActive()


def _qcow2(path, size="64M") -> str:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), size], check=True)
    return str(path)


@pytest.mark.guest
def test_rename_keeps_disks_and_config(conn, micro_guest, workdir, prefix):
    disk = _qcow2(workdir / "r.qcow2")
    guest = micro_guest("old", start=False, vcpus=1, max_vcpus=2, memory_mib=192, disks=[{"path": disk,
                                                                                         "format": "qcow2"}])
    uuid = guest.dom.UUIDString()
    before = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    micro_guest("other", start=False)
    with pytest.raises(Conflict, match=f"{prefix}other exists already"):
        lc.rename(conn, guest.name, f"{prefix}other")
    result = lc.rename(conn, guest.name, f"{prefix}new")
    assert result["uuid"] == uuid
    with pytest.raises(NotFound):
        lc.start(conn, guest.name)
    dom = conn.lookupByName(f"{prefix}new")
    after = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    assert after.findtext("name") == f"{prefix}new"
    for root in (before, after):
        root.remove(root.find("name"))
    assert etree.tostring(after) == etree.tostring(before), "rename changed more than the name"
    lc.start(conn, f"{prefix}new")
    with pytest.raises(InvalidState, match="it is running; shut it down first"):
        lc.rename(conn, f"{prefix}new", f"{prefix}newer")


def _dir_pool(conn, prefix, workdir) -> libvirt.virStoragePool:
    root = etree.Element("pool", type="dir")
    etree.SubElement(root, "name").text = f"{prefix}pool"
    target = etree.SubElement(root, "target")
    (workdir / "pool").mkdir()
    etree.SubElement(target, "path").text = str(workdir / "pool")
    pool = conn.storagePoolDefineXML(etree.tostring(root, encoding="unicode"))
    pool.create()
    return pool


def _volume(pool, name: str, backing: str | None = None) -> str:
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="MiB").text = "32"
    etree.SubElement(etree.SubElement(root, "target"), "format", type="qcow2")
    if backing:
        bs = etree.SubElement(root, "backingStore")
        etree.SubElement(bs, "path").text = backing
        etree.SubElement(bs, "format", type="qcow2")
    return pool.createXML(etree.tostring(root, encoding="unicode"), 0).path()


@pytest.mark.guest
def test_delete_storage_removes_own_disks_and_keeps_shared_ones(conn, micro_guest, workdir, prefix):
    pool = _dir_pool(conn, prefix, workdir)
    own = _volume(pool, f"{prefix}own.qcow2")
    shared = _volume(pool, f"{prefix}shared.qcow2")
    base = _volume(pool, f"{prefix}base.qcow2")
    _volume(pool, f"{prefix}overlay.qcow2", backing=base)  # another volume is built on base
    loose = _qcow2(workdir / "loose.qcow2")  # a plain file outside any pool
    disks = [{"path": p, "format": "qcow2"} for p in (own, shared, base, loose)]
    a = micro_guest("a", disks=disks)
    b = micro_guest("b", start=False, disks=[{"path": shared, "format": "qcow2"}])
    a.log.wait_for("KVMKIT-STATUS")
    with pytest.raises(InvalidState, match="it is running"):
        lc.delete(conn, a.name, storage=True)
    a.dom.managedSave(0)
    assert a.dom.hasManagedSaveImage(0)
    result = lc.delete(conn, a.name, storage=True)
    assert sorted(result["deleted"]) == sorted([own, loose])
    kept = {k["path"]: k["reason"] for k in result["kept"]}
    assert kept[shared] == f"used by VM {b.name}"
    assert kept[base].startswith("backing file of volume") and "overlay" in kept[base]
    for path in (own, loose):
        assert not os.path.exists(path), f"{path} was left behind"
    assert os.path.exists(shared) and os.path.exists(base)
    assert a.name not in {d.name() for d in conn.listAllDomains()}
    assert not os.path.exists(f"/var/lib/libvirt/qemu/save/{a.name}.save")
    pool.refresh(0)
    assert f"{prefix}own.qcow2" not in pool.listVolumes()
    # b still boots from its definition; delete --force powers it off first and keeps nothing of it
    lc.start(conn, b.name)
    result = lc.delete(conn, b.name, storage=True, force=True)
    assert result["deleted"] == [shared] and not os.path.exists(shared)


@pytest.mark.fast
def test_drivers_without_acpi_or_nvram_flags_still_work(test_conn):
    # the test driver supports neither the ACPI shutdown flag nor the NVRAM/checkpoint undefine flags
    assert lc.shutdown(test_conn, "test", timeout=5)["forced"] is False
    lc.start(test_conn, "test")
    out = lc.delete(test_conn, "test", storage=True, force=True)
    assert out["deleted"] == [] and out["kept"] == [{"path": "/guest/diskimage1",
                                                     "reason": "does not exist (nothing to delete)"}]
    assert test_conn.listAllDomains() == []
