"""Clones on qemu:///system: linked and full clones boot while the source runs; refusals leave nothing."""

from __future__ import annotations

import os
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import Conflict, InvalidState, OperationFailed
from kvmkit.service.copies import snapshots as snaps
from kvmkit.service.copies.clone import clone_vm
from tests.service.copies.test_snapshots import make_disk
from tests.support.serial import SerialLog

BOOT_TIMEOUT = 60


def macs(dom: libvirt.virDomain) -> list[str]:
    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    return [m.get("address") for m in root.iterfind("devices/interface/mac")]


@pytest.mark.guest
def test_linked_and_full_clone_boot_while_source_runs(conn, micro_guest, workdir, prefix):
    src = micro_guest("src", disks=[{"path": make_disk(workdir, f"{prefix}src"), "format": "qcow2"}],
                      networks=[{"network": "default"}])
    src.log.wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    with pytest.raises(InvalidState, match="shut off or paused"):
        clone_vm(conn, src.name, f"{prefix}no")
    seen: list[float] = []
    clones = {}
    for kind, linked in (("lnk", True), ("full", False)):
        src.dom.suspend()
        try:
            clones[kind] = clone_vm(conn, src.name, f"{prefix}{kind}", linked=linked, progress=seen.append)
        finally:
            src.dom.resume()
    assert seen and seen[-1] == 100.0
    lnk, full = clones["lnk"], clones["full"]
    assert lnk["disks"][0]["path"] == str(workdir / f"{prefix}lnk-vda.qcow2")
    assert lnk["disks"][0]["backing"] == str(workdir / f"{prefix}src.qcow2")
    assert full["disks"][0]["path"] == str(workdir / f"{prefix}full-vda.qcow2")
    assert snaps.backing_chain(full["disks"][0]["path"], "qcow2")[1:] == []
    assert [s["name"] for s in snaps.list_snapshots(conn, src.name)] == [f"linked-{prefix}lnk"]
    uuids = {src.dom.UUIDString(), lnk["uuid"], full["uuid"]}
    assert len(uuids) == 3
    all_macs = macs(src.dom) + lnk["macs"] + full["macs"]
    assert len(set(all_macs)) == 3
    for kind in ("lnk", "full"):
        log = workdir / f"{prefix}{kind}.serial.log"
        assert clones[kind]["serial_logs"] == [str(log)] * len(clones[kind]["serial_logs"])
        conn.lookupByName(f"{prefix}{kind}").create()
    for kind in ("lnk", "full"):
        SerialLog(workdir / f"{prefix}{kind}.serial.log").wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    assert src.dom.isActive() and src.dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    # the linked clone's base stays read-only: the source's snapshot cannot be merged into it
    with pytest.raises(InvalidState, match="linked clone"):
        snaps.delete_snapshot(conn, src.name, f"linked-{prefix}lnk")


@pytest.mark.guest
def test_clone_refuses_existing_name_and_leaves_nothing_on_failure(conn, micro_guest, workdir, prefix):
    src = micro_guest("src2", start=False, disks=[{"path": make_disk(workdir, f"{prefix}a"), "format": "qcow2"},
                                                  {"path": make_disk(workdir, f"{prefix}b"), "format": "qcow2"}])
    other = micro_guest("taken", start=False)
    with pytest.raises(Conflict, match="exists already"):
        clone_vm(conn, src.name, other.name)
    os.unlink(workdir / f"{prefix}b.qcow2")  # the second disk cannot be read: the copy fails half-way
    before = sorted(p.name for p in workdir.iterdir())
    with pytest.raises(OperationFailed):
        clone_vm(conn, src.name, f"{prefix}half")
    with pytest.raises(Exception):  # noqa: B017 - libvirt or kvmkit error, either way nothing is left
        clone_vm(conn, src.name, f"{prefix}half", linked=True)
    assert sorted(p.name for p in workdir.iterdir()) == before
    assert f"{prefix}half" not in [d.name() for d in conn.listAllDomains()]
    assert snaps.list_snapshots(conn, src.name) == []
    assert not any(Path(p).name.startswith(f"{prefix}half") for p in os.listdir(workdir))


@pytest.mark.guest
def test_linked_clone_base_is_protected_from_source_snapshots(conn, micro_guest, workdir, prefix):
    src = micro_guest("src3", start=False, disks=[{"path": make_disk(workdir, f"{prefix}c"), "format": "qcow2"}])
    snaps.create_snapshot(conn, src.name, "pre")  # lives inside the file that becomes the clone's base
    res = clone_vm(conn, src.name, f"{prefix}lc", linked=True)
    with pytest.raises(InvalidState, match=f"'{prefix}lc' uses .* as a backing file"):
        snaps.revert_snapshot(conn, src.name, "pre")
    with pytest.raises(InvalidState, match="linked clone"):
        snaps.delete_snapshot(conn, src.name, f"linked-{prefix}lc")
    snaps.create_snapshot(conn, src.name, "post")  # goes into the source's own overlay
    snaps.revert_snapshot(conn, src.name, "post")
    assert snaps.backing_chain(res["disks"][0]["path"], "qcow2")[1]["path"] == str(workdir / f"{prefix}c.qcow2")
    # once the clone is gone, the source's linked-... snapshot merges back into its base
    conn.lookupByName(f"{prefix}lc").undefine()
    os.unlink(res["disks"][0]["path"])
    with pytest.raises(InvalidState, match=r"'post' .* is stored in"):
        snaps.delete_snapshot(conn, src.name, f"linked-{prefix}lc")
    snaps.delete_snapshot(conn, src.name, "post")
    snaps.delete_snapshot(conn, src.name, f"linked-{prefix}lc")
    root = etree.fromstring(src.dom.XMLDesc(0).encode())
    assert root.find("devices/disk/source").get("file") == str(workdir / f"{prefix}c.qcow2")
    assert [s["name"] for s in snaps.list_snapshots(conn, src.name)] == ["pre"]


@pytest.mark.fast
def test_rename_identity_gives_the_new_vm_its_own_paths():
    from kvmkit.service.copies.clone import rename_identity

    root = etree.fromstring(
        "<domain><name>a</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid><os><type>hvm</type>"
        "<nvram>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram></os><devices>"
        "<serial type='pty'><log file='/var/log/kvmkit/a.serial.log'/></serial>"
        "<console type='pty'><log file='/var/log/kvmkit/other.log'/></console>"
        "<channel type='unix'><source mode='bind' path='/run/a.agent'/><target type='virtio' "
        "name='org.qemu.guest_agent.0'/></channel>"
        "<graphics type='vnc' port='5901' autoport='no'/></devices></domain>")
    out = rename_identity(root, "a", "web-2")
    assert root.findtext("name") == "web-2" and root.find("uuid") is None
    assert out["serial_logs"] == ["/var/log/kvmkit/web-2.serial.log", "/var/log/kvmkit/web-2.serial.log"]
    assert out["nvram"] == ("/var/lib/libvirt/qemu/nvram/a_VARS.fd", "/var/lib/libvirt/qemu/nvram/web-2_VARS.fd")
    assert root.findtext("os/nvram") == "/var/lib/libvirt/qemu/nvram/web-2_VARS.fd"
    assert root.find("devices/channel/source").get("path") is None
    gfx = root.find("devices/graphics")
    assert gfx.get("autoport") == "yes" and gfx.get("port") is None


@pytest.mark.guest
def test_pool_volume_disks_are_cloned_snapshotted_and_backed_up(conn, micro_guest, workdir, prefix):
    from kvmkit.service.copies.backup import backup_vm

    pool = conn.storagePoolLookupByName("default")
    vol_xml = etree.Element("volume")
    etree.SubElement(vol_xml, "name").text = f"{prefix}vol.qcow2"
    etree.SubElement(vol_xml, "capacity", unit="MiB").text = "32"
    etree.SubElement(etree.SubElement(vol_xml, "target"), "format", type="qcow2")
    vol = pool.createXML(etree.tostring(vol_xml, encoding="unicode"), 0)
    guest = micro_guest("vol", start=False)
    root = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    disk = etree.SubElement(root.find("devices"), "disk", type="volume", device="disk")
    etree.SubElement(disk, "driver", name="qemu", type="qcow2")
    etree.SubElement(disk, "source", pool="default", volume=f"{prefix}vol.qcow2")
    etree.SubElement(disk, "target", dev="vda", bus="virtio")
    conn.defineXML(etree.tostring(root, encoding="unicode"))
    assert snaps.create_snapshot(conn, guest.name, "s1")["kind"] == "internal"
    res = clone_vm(conn, guest.name, f"{prefix}vclone")
    assert res["disks"][0]["path"] == str(Path(vol.path()).parent / f"{prefix}vclone-vda.qcow2")
    assert pool.storageVolLookupByName(f"{prefix}vclone-vda.qcow2").path() == res["disks"][0]["path"]
    manifest = backup_vm(conn, guest.name, workdir / "bk")
    assert manifest["disks"][0]["original_path"] == vol.path()
