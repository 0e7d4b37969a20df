"""Snapshots on qemu:///system with micro-guests: internal with memory, external overlays, tree, refusals."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import InvalidState, NotFound
from kvmkit.service.copies import snapshots as snaps

BOOT_TIMEOUT = 180  # a guard, not a claim: the micro-guest is ready in ~3 s on an idle host


def make_disk(workdir: Path, name: str, fmt: str = "qcow2", size: str = "64M") -> str:
    path = workdir / f"{name}.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), size], check=True)
    return str(path)


def disk_source(dom: libvirt.virDomain, flags: int = 0) -> str:
    root = etree.fromstring(dom.XMLDesc(flags).encode())
    return root.find("devices/disk/source").get("file")


@pytest.mark.guest
def test_revert_running_snapshot_continues_uptime(conn, micro_guest, workdir, prefix):
    guest = micro_guest("snap", disks=[{"path": make_disk(workdir, f"{prefix}snap"), "format": "qcow2"}])
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    guest.log.wait_status(timeout=BOOT_TIMEOUT)
    before = guest.log.statuses()[-1].uptime
    snap = snaps.create_snapshot(conn, guest.name, "s1", description="running")
    assert snap["kind"] == "internal" and snap["memory"] and snap["state"] == "running" and snap["current"]
    after_snap = guest.log.statuses()[-1].uptime
    # let the guest run on ~8 s past the snapshot
    deadline = time.monotonic() + BOOT_TIMEOUT
    while guest.log.statuses()[-1].uptime < after_snap + 8:
        assert time.monotonic() < deadline, "guest stopped reporting status"
        time.sleep(0.3)
    late = guest.log.statuses()[-1].uptime
    offset = guest.log.offset()
    res = snaps.revert_snapshot(conn, guest.name, "s1")
    assert res["state"] == "running"
    if guest.log.offset() < offset:  # QEMU restarted and virtlogd truncated the log
        offset = 0
    status = guest.log.wait_status(timeout=BOOT_TIMEOUT, after=offset)
    assert "KVMKIT-GUEST-READY" not in guest.log.text()[offset:], "the guest rebooted instead of resuming"
    # The snapshot moment lies after the status `before` (read before the snapshot began), and the guest
    # carries on from it: its first status after the revert is past `before` (not ~0: no reboot) and below
    # `late`, the uptime it had reached before the revert (~8 s past the snapshot, so a loaded host that
    # delays the guest's next line by seconds cannot blur the two).
    print(f"uptime: snapshot at ~{after_snap}, before revert {late}, first after revert {status.uptime}")
    assert before < status.uptime < late, (before, after_snap, late, status)
    assert status.uptime > 2
    # from a shut-off VM too: the running snapshot comes back running, not booting
    guest.dom.destroy()
    offset = guest.log.offset()
    assert snaps.revert_snapshot(conn, guest.name, "s1")["state"] == "running"
    if guest.log.offset() < offset:
        offset = 0
    again = guest.log.wait_status(timeout=BOOT_TIMEOUT, after=offset)
    assert "KVMKIT-GUEST-READY" not in guest.log.text()[offset:]
    assert before < again.uptime < late, (before, after_snap, late, again)


@pytest.mark.guest
def test_external_snapshot_delete_merges_back_while_running(conn, micro_guest, workdir, prefix):
    base = make_disk(workdir, f"{prefix}ext")
    guest = micro_guest("ext", disks=[{"path": base, "format": "qcow2"}])
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    s1 = snaps.create_snapshot(conn, guest.name, "e1", disk_only=True)
    s2 = snaps.create_snapshot(conn, guest.name, "e2", disk_only=True)
    assert s1["kind"] == s2["kind"] == "external"
    top = s2["overlays"]["vda"]
    assert disk_source(guest.dom) == top and Path(top).exists()
    tree = snaps.list_snapshots(conn, guest.name)
    assert [(t["name"], t["depth"], t["current"]) for t in tree] == [("e1", 0, False), ("e2", 1, True)]
    # delete the inner one first (non-active commit), then the current one (active commit + pivot)
    snaps.delete_snapshot(conn, guest.name, "e1")
    assert not Path(s1["overlays"]["vda"]).exists()
    assert snaps.list_snapshots(conn, guest.name)[0]["name"] == "e2"
    assert snaps.backing_chain(top, "qcow2")[1]["path"] == base
    snaps.delete_snapshot(conn, guest.name, "e2")
    assert sorted(p.name for p in workdir.glob("*.qcow2")) == [Path(base).name]
    assert guest.dom.isActive() and disk_source(guest.dom) == base
    assert disk_source(guest.dom, libvirt.VIR_DOMAIN_XML_INACTIVE) == base
    assert snaps.list_snapshots(conn, guest.name) == []
    offset = guest.log.offset()
    guest.log.wait_status(timeout=BOOT_TIMEOUT, after=offset)  # still running


@pytest.mark.guest
def test_delete_inner_internal_snapshot_keeps_children(conn, micro_guest, workdir, prefix):
    guest = micro_guest("tree", start=False, disks=[{"path": make_disk(workdir, f"{prefix}tree"), "format": "qcow2"}])
    for name in ("a", "b", "c"):
        snaps.create_snapshot(conn, guest.name, name)
    snaps.revert_snapshot(conn, guest.name, "a")
    snaps.create_snapshot(conn, guest.name, "d")
    tree = snaps.list_snapshots(conn, guest.name)
    assert [(t["name"], t["depth"]) for t in tree] == [("a", 0), ("b", 1), ("c", 2), ("d", 1)]
    assert [t["name"] for t in tree if t["current"]] == ["d"]
    assert snaps.current_snapshot(conn, guest.name)["name"] == "d"
    snaps.delete_snapshot(conn, guest.name, "b")
    tree = {t["name"]: t for t in snaps.list_snapshots(conn, guest.name)}
    assert tree["c"]["parent"] == "a" and set(tree["a"]["children"]) == {"c", "d"}
    res = snaps.revert_snapshot(conn, guest.name, "c")
    assert res["state"] == "shut off"
    with pytest.raises(NotFound, match="no snapshot 'b'"):
        snaps.revert_snapshot(conn, guest.name, "b")


@pytest.mark.guest
def test_raw_disk_is_refused_with_convert_hint(conn, micro_guest, workdir, prefix):
    raw = make_disk(workdir, f"{prefix}raw", fmt="raw")
    guest = micro_guest("raw", start=False, disks=[{"path": raw, "format": "raw"}])
    with pytest.raises(InvalidState) as err:
        snaps.create_snapshot(conn, guest.name, "s")
    assert "vda" in err.value.message and raw in err.value.message
    assert "kvmkit image convert" in (err.value.hint or "")
    assert guest.dom.snapshotNum(0) == 0


def make_uefi(conn, guest, workdir: Path) -> None:
    """Turn a defined micro-guest into a UEFI (OVMF pflash) one; it still boots its kernel directly."""
    root = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    os_el = root.find("os")
    loader = etree.Element("loader", readonly="yes", type="pflash")
    loader.text = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    nvram = etree.Element("nvram", template="/usr/share/OVMF/OVMF_VARS_4M.fd")
    nvram.text = str(workdir / f"{guest.name}_VARS.fd")
    os_el.insert(1, loader)
    os_el.insert(2, nvram)
    conn.defineXML(etree.tostring(root, encoding="unicode"))


@pytest.mark.guest
def test_uefi_vm_gets_external_snapshot_and_offline_merge(conn, micro_guest, workdir, prefix):
    base = make_disk(workdir, f"{prefix}uefi")
    guest = micro_guest("uefi", start=False, disks=[{"path": base, "format": "qcow2"}])
    make_uefi(conn, guest, workdir)
    res = snaps.create_snapshot(conn, guest.name, "u1")
    assert res["kind"] == "external" and "UEFI" in res["note"]
    overlay = res["overlays"]["vda"]
    assert disk_source(guest.dom, libvirt.VIR_DOMAIN_XML_INACTIVE) == overlay
    snaps.delete_snapshot(conn, guest.name, "u1")
    assert disk_source(guest.dom, libvirt.VIR_DOMAIN_XML_INACTIVE) == base
    assert not Path(overlay).exists()


@pytest.mark.guest
def test_running_uefi_vm_gets_external_snapshot_with_memory(conn, micro_guest, workdir, prefix):
    base = make_disk(workdir, f"{prefix}uefirun")
    guest = micro_guest("uefirun", start=False, disks=[{"path": base, "format": "qcow2"}])
    make_uefi(conn, guest, workdir)
    guest.dom.create()
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=2 * BOOT_TIMEOUT)  # OVMF under TCG takes a while
    res = snaps.create_snapshot(conn, guest.name, "u1")
    assert res["kind"] == "external" and res["memory"] and "memory file" in res["note"]
    assert Path(res["memory_file"]).exists() and Path(res["overlays"]["vda"]).exists()
    guest.log.wait_status(timeout=BOOT_TIMEOUT, after=guest.log.offset())
    snaps.delete_snapshot(conn, guest.name, "u1")
    assert not Path(res["memory_file"]).exists() and not Path(res["overlays"]["vda"]).exists()
    assert guest.dom.isActive() and disk_source(guest.dom) == base
    guest.log.wait_status(timeout=BOOT_TIMEOUT, after=guest.log.offset())


@pytest.mark.fast
def test_tree_and_current_on_test_driver(test_conn):
    root = etree.Element("domain", type="test")
    etree.SubElement(root, "name").text = "snapdemo"
    etree.SubElement(root, "memory", unit="MiB").text = "64"
    etree.SubElement(etree.SubElement(root, "os"), "type").text = "hvm"
    disk = etree.SubElement(etree.SubElement(root, "devices"), "disk", type="file", device="disk")
    etree.SubElement(disk, "driver", name="qemu", type="qcow2")
    etree.SubElement(disk, "source", file="/guest/snapdemo.qcow2")
    etree.SubElement(disk, "target", dev="vda", bus="virtio")
    test_conn.defineXML(etree.tostring(root, encoding="unicode"))
    assert snaps.current_snapshot(test_conn, "snapdemo") is None
    snaps.create_snapshot(test_conn, "snapdemo", "one", description="first")
    snaps.create_snapshot(test_conn, "snapdemo", "two")
    tree = snaps.list_snapshots(test_conn, "snapdemo")
    assert [(t["name"], t["parent"], t["depth"], t["current"]) for t in tree] == [
        ("one", None, 0, False), ("two", "one", 1, True)]
    assert tree[0]["description"] == "first"
    bare = etree.fromstring(etree.tostring(root))
    bare.find("name").text = "nodisk"
    bare.find("devices").remove(bare.find("devices/disk"))
    test_conn.defineXML(etree.tostring(bare, encoding="unicode"))
    with pytest.raises(InvalidState, match="no writable disk"):
        snaps.create_snapshot(test_conn, "nodisk", "s")
    with pytest.raises(NotFound, match="'nope' not found"):
        snaps.list_snapshots(test_conn, "nope")


def qemu_io(path: str, cmd: str) -> str:
    res = subprocess.run(["qemu-io", "-f", "qcow2", "-c", cmd, path], capture_output=True, text=True, check=True)
    assert "Pattern verification failed" not in res.stdout, res.stdout
    return res.stdout


@pytest.mark.guest
def test_external_snapshots_of_shut_off_vm_merge_back_with_their_data(conn, micro_guest, workdir, prefix):
    base = make_disk(workdir, f"{prefix}off")
    guest = micro_guest("offext", start=False, disks=[{"path": base, "format": "qcow2"}])
    qemu_io(base, "write -P 0x11 0 1M")
    e1 = snaps.create_snapshot(conn, guest.name, "e1", disk_only=True)["overlays"]["vda"]
    qemu_io(e1, "write -P 0x22 1M 1M")  # what the VM wrote after e1
    e2 = snaps.create_snapshot(conn, guest.name, "e2", disk_only=True)["overlays"]["vda"]
    qemu_io(e2, "write -P 0x33 2M 1M")  # ... and after e2
    snaps.delete_snapshot(conn, guest.name, "e1")  # inner: qemu-img commit + rebase of e2's overlay
    assert not Path(e1).exists()
    assert [c["path"] for c in snaps.backing_chain(e2, "qcow2")] == [e2, base]
    snaps.delete_snapshot(conn, guest.name, "e2")  # the active one: commit, definition back on base
    assert disk_source(guest.dom, libvirt.VIR_DOMAIN_XML_INACTIVE) == base and not Path(e2).exists()
    for offset, pattern in (("0", "0x11"), ("1M", "0x22"), ("2M", "0x33")):
        qemu_io(base, f"read -P {pattern} {offset} 1M")
    assert sorted(p.name for p in workdir.glob("*.qcow2")) == [Path(base).name]


@pytest.mark.guest
def test_delete_external_snapshot_whose_overlay_is_no_longer_used(conn, micro_guest, workdir, prefix):
    base = make_disk(workdir, f"{prefix}gone")
    guest = micro_guest("gone", start=False, disks=[{"path": base, "format": "qcow2"}])
    overlay = snaps.create_snapshot(conn, guest.name, "e1", disk_only=True)["overlays"]["vda"]
    root = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    root.find("devices/disk/source").set("file", base)  # someone pointed the VM back at its base
    conn.defineXML(etree.tostring(root, encoding="unicode"))
    with pytest.raises(InvalidState, match="not in the backing chain") as err:
        snaps.delete_snapshot(conn, guest.name, "e1")
    assert overlay in (err.value.hint or "")
    Path(overlay).unlink()
    assert snaps.delete_snapshot(conn, guest.name, "e1")["merged"] == []
    assert snaps.list_snapshots(conn, guest.name) == []
