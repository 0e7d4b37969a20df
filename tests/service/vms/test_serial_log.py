"""A VM's serial log is append-only: start, stop/start, snapshot revert (running and from shut off), managed
save, restore from a backup and clone never truncate it (qemu:///system, micro-guests).

libvirt truncates a log without ``append='on'`` whenever QEMU opens it; a revert to a running snapshot starts
a new QEMU, so the log of such a domain was empty right after the revert. kvmkit writes ``append='on'``, and
adds it to definitions made without it (an older kvmkit, another tool) before it starts their QEMU.
"""

from __future__ import annotations

import subprocess

import libvirt
import pytest
from lxml import etree

from kvmkit.service.copies import snapshots as snaps
from kvmkit.service.copies.backup import backup_vm
from kvmkit.service.copies.clone import clone_vm
from kvmkit.service.copies.restore import restore_vm
from kvmkit.service.vms import lifecycle as lc
from kvmkit.service.vms.create import create_vm
from kvmkit.xml.chardevs import keep_log_history
from tests.support.serial import SerialLog


class History:
    """Every read of the log must start with everything read before (nothing lost) and may only grow."""

    def __init__(self, log: SerialLog) -> None:
        self.log, self.seen = log, b""

    def check(self, what: str) -> None:
        now = self.log.path.read_bytes()
        assert now.startswith(self.seen), (
            f"{what}: the serial log lost history ({len(self.seen)} bytes before, {len(now)} now, starting "
            f"{now[:80]!r})")
        self.seen = now

    def wait_new_status(self, what: str) -> None:
        """A status line printed after everything seen so far, then the check."""
        self.log.wait_status(after=len(self.seen.decode(errors="replace")))
        self.check(what)


def appends(xml: str) -> list[str | None]:
    """The append attribute of every serial log in a domain XML."""
    return [el.get("append") for el in etree.fromstring(xml.encode()).iterfind("devices/serial/log")]


def saved_appends(snap: libvirt.virDomainSnapshot) -> list[str | None]:
    domain = etree.fromstring(snap.getXMLDesc(0).encode()).find("domain")
    return appends(etree.tostring(domain, encoding="unicode"))


@pytest.mark.fast
def test_keep_log_history_adds_append_where_missing_and_respects_off():
    root = etree.fromstring(
        "<domain><devices>"
        "<serial type='pty'><log file='/l/a.log'/><target port='0'/></serial>"
        "<console type='pty'><log file='/l/a.log'/><target type='serial' port='0'/></console>"
        "<serial type='file'><source path='/l/b.log'/><target port='1'/></serial>"
        "<channel type='pty'><log file='/l/c.log' append='off'/><target type='virtio' name='x'/></channel>"
        "<serial type='pty'><log file='/l/d.log' append='on'/><target port='2'/></serial>"
        "<disk type='file'><source file='/l/disk.img'/></disk>"
        "</devices></domain>")
    assert keep_log_history(root) == ["/l/a.log", "/l/b.log"]
    got = {(el.getparent().tag, el.get("file") or el.get("path")): el.get("append")
           for el in root.iter("log", "source")}
    assert got == {("serial", "/l/a.log"): "on", ("console", "/l/a.log"): "on", ("serial", "/l/b.log"): "on",
                   ("channel", "/l/c.log"): "off", ("serial", "/l/d.log"): "on", ("disk", "/l/disk.img"): None}
    assert keep_log_history(root) == []  # nothing left to change


@pytest.mark.guest
def test_a_kvmkit_vm_keeps_its_serial_log_across_revert_restart_restore_and_clone(conn, prefix, workdir):
    name = f"{prefix}log"
    log = SerialLog(workdir / f"{name}.serial.log")
    create_vm(conn, {"name": name, "micro": True, "memory_mib": "256M", "nics": [], "disks": [{"size": "32M"}],
                     "serial_log": str(log.path)}, start=True)
    dom = conn.lookupByName(name)
    assert appends(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == ["on"]
    history = History(log)
    history.wait_new_status("boot")
    assert snaps.create_snapshot(conn, name, "s1")["memory"]  # running: with its memory
    history.wait_new_status("after the snapshot")
    assert snaps.revert_snapshot(conn, name, "s1")["state"] == "running"  # a new QEMU from the saved state
    history.check("right after the revert")
    history.wait_new_status("after the revert")
    lc.destroy(conn, name)
    lc.start(conn, name)
    history.wait_new_status("stop and start")
    lc.destroy(conn, name)
    assert snaps.revert_snapshot(conn, name, "s1")["state"] == "running"  # from shut off to running
    history.wait_new_status("revert of a shut-off VM")
    backup_vm(conn, name, workdir / "backup")
    lc.delete(conn, name, storage=True, force=True)  # the log is not kvmkit's default one: it stays
    history.check("delete")
    restore_vm(conn, workdir / "backup")  # the same name, the same log file
    assert appends(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == ["on"]
    lc.start(conn, name)
    history.wait_new_status("restore from a backup")
    lc.destroy(conn, name)
    before_clone = log.path.read_bytes()
    made = clone_vm(conn, name, f"{prefix}copy")
    [clone_log] = set(made["serial_logs"])  # the serial port and its console share one
    assert clone_log != str(log.path)  # a log of its own
    assert appends(conn.lookupByName(f"{prefix}copy").XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == ["on"]
    lc.start(conn, f"{prefix}copy")
    SerialLog(clone_log).wait_status()
    assert log.path.read_bytes() == before_clone  # the clone never wrote to (or truncated) the source's log


@pytest.mark.guest
def test_a_domain_defined_without_append_gets_it_before_its_log_is_opened_again(conn, prefix, workdir, micro_guest):
    disk = workdir / f"{prefix}old.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "32M"], check=True)
    guest = micro_guest("old", start=False, disks=[{"path": str(disk), "format": "qcow2"}])
    root = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    del root.find("devices/serial/log").attrib["append"]  # as an older kvmkit or another tool defined it
    dom = conn.defineXML(etree.tostring(root, encoding="unicode"))
    assert appends(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == [None]
    dom.create()
    history = History(guest.log)
    history.wait_new_status("boot")
    snaps.create_snapshot(conn, guest.name, "old")  # it saves the definition without append
    assert saved_appends(dom.snapshotLookupByName("old")) == [None]
    backup_vm(conn, guest.name, workdir / "backup")  # so does the backup
    history.wait_new_status("after the snapshot and the backup")
    dom.managedSave(0)  # and the managed save image, which the next start resumes from
    history.check("managed save")

    started = lc.start(conn, guest.name)
    history.wait_new_status("start from the managed save image")
    assert started["restored_from_managed_save"] and started["log_append_set"] == [str(guest.log.path)]
    assert appends(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == ["on"]
    lc.destroy(conn, guest.name)
    assert "log_append_set" not in lc.start(conn, guest.name)  # fixed once, for good
    history.wait_new_status("boot")

    assert snaps.revert_snapshot(conn, guest.name, "old")["state"] == "running"
    history.check("right after the revert to a snapshot saved without append")
    history.wait_new_status("after the revert")
    snap = dom.snapshotLookupByName("old")
    assert saved_appends(snap) == ["on"] and snap.isCurrent(0)  # the snapshot itself is kept, now appending

    lc.delete(conn, guest.name, force=True)  # its disk is in the test's directory: it stays
    restore_vm(conn, workdir / "backup")  # a backup written without append
    assert appends(conn.lookupByName(guest.name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) == ["on"]
    lc.start(conn, guest.name)
    history.wait_new_status("restore of a backup saved without append")
