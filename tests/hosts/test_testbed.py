"""The many-hosts test bed itself: separate daemons reachable over TCP from the test process, the
micro-guest booting on a bed host, shared storage, and a tear-down that leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import libvirt
import pytest

from tests.support import testbed as tb


def _netns() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {n["name"] for n in json.loads(out or "[]")}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {n["ifname"] for n in json.loads(out)}


@pytest.mark.guest
def test_bed_hosts_are_separate_libvirt_hosts(hosts, conn) -> None:
    uuids = set()
    for host in hosts:
        c = hosts.conn(host.letter)
        assert c.getURI() == f"qemu+tcp://{host.address}/system"
        assert c.getHostname() == host.hostname
        uuids.add(c.getCapabilities().split("<uuid>")[1].split("</uuid>")[0])
    local_uuid = conn.getCapabilities().split("<uuid>")[1].split("</uuid>")[0]
    assert len(uuids) == 3 and local_uuid not in uuids
    # the machine's own libvirt configuration is not what the bed hosts see
    assert "listen_tcp" not in Path("/etc/libvirt/libvirtd.conf").read_text().replace("#listen_tcp", "")


@pytest.mark.guest
def test_micro_guest_boots_on_a_bed_host_only(hosts, conn, prefix) -> None:
    guest = hosts.guest("b", "vm")
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=120)
    assert f"{prefix}vm" in hosts.names_on("b")
    assert f"{prefix}vm" not in hosts.names_on("a")
    assert f"{prefix}vm" not in {d.name() for d in conn.listAllDomains()}
    # its QEMU runs in host b's network namespace
    pid = int((hosts["b"].dir / "run" / "libvirt" / "qemu" / f"{prefix}vm.pid").read_text())
    assert pid in hosts["b"].pids()


@pytest.mark.guest
def test_shared_storage_is_the_same_path_everywhere(hosts, testbed) -> None:
    marker = testbed.shared_dir / f"{hosts.prefix}marker"
    marker.write_text("seen by every host")
    try:
        for host in hosts:
            assert host.run("cat", str(marker)).stdout == "seen by every host"
            # while /etc/libvirt inside is the host's private copy
            assert host.address in host.run("cat", "/etc/libvirt/libvirtd.conf").stdout
    finally:
        marker.unlink()


@pytest.mark.guest
def test_kvm_hidden_on_host_c(hosts) -> None:
    with pytest.raises(libvirt.libvirtError, match="kvm"):
        hosts.conn("c").getDomainCapabilities(None, "x86_64", None, "kvm")
    assert "<domain>qemu</domain>" in hosts.conn("c").getDomainCapabilities(None, "x86_64", None, "qemu")


@pytest.mark.guest
def test_a_killed_daemon_is_healed_and_its_guest_kept(hosts) -> None:
    guest = hosts.guest("a", "keep")
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=120)
    hosts["a"].kill_libvirtd()
    with pytest.raises(libvirt.libvirtError):
        hosts["a"].connect()
    hosts["a"].heal()
    dom = hosts.conn("a").lookupByName(guest.name)
    assert dom.isActive()  # the restarted libvirtd found its running QEMU again


@pytest.mark.guest
def test_teardown_leaves_nothing_and_the_local_daemon_running(conn) -> None:
    before_links = _links()
    bed = tb.create(2, no_kvm=())
    names = {h.netns for h in bed}
    assert names <= _netns()
    c = bed["a"].connect()
    assert c.getLibVersion() > 0
    c.close()
    bed.teardown()
    assert not names & _netns()
    assert _links() <= before_links
    assert not bed.dir.exists()
    assert not (tb.STATE_DIR / f"{bed.bed_id}.json").exists()
    assert conn.getLibVersion() > 0  # qemu:///system still answers


@pytest.mark.guest
def test_a_dead_sessions_bed_is_swept() -> None:
    bed = tb.create(1, no_kvm=())
    try:
        # the session "dies": its lock is released and its daemons are gone, the namespace and files stay
        for proc in (bed["a"].libvirtd, bed["a"].virtlogd, bed["a"].holder):
            assert proc is not None
            proc.kill()
            proc.wait(10)
        assert bed.lock_fd is not None
        import os

        os.close(bed.lock_fd)
        bed.lock_fd = None
        assert bed.bed_id in tb.sweep_stale()
        assert bed["a"].netns not in _netns()
        assert not bed.dir.exists()
    finally:
        bed.teardown()
