"""Clones on qemu:///system: linked and full clones boot while the source runs; refusals leave nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import Conflict, InvalidState, OperationFailed
from kvmkit.service.copies import snapshots as snaps
from kvmkit.service.copies.clone import clone_vm
from tests.service.copies.test_snapshots import make_disk
from tests.service.storage_fixtures import *  # noqa: F403 - loop_device
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
        "<domain><name>a</name><uuid>4dea22b3-1d52-d8f3-2516-782e98ab3fa0</uuid><genid>43dc0cf8-809b-4adb-9bea-"
        "a9abb5f3d90d</genid><sysinfo type='smbios'><system><entry name='uuid'>4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
        "</entry></system></sysinfo><os><type>hvm</type>"
        "<nvram>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram></os><devices>"
        "<serial type='pty'><log file='/var/log/kvmkit/a.serial.log'/></serial>"
        "<console type='pty'><log file='/var/log/kvmkit/other.log'/></console>"
        "<channel type='unix'><source mode='bind' path='/var/lib/libvirt/qemu/channel/target/domain-3-a/"
        "org.qemu.guest_agent.0'/><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"
        "<channel type='unix'><source mode='bind' path='/run/kvmkit/fwd.sock'/><target type='guestfwd' "
        "address='10.0.2.1' port='4600'/></channel>"
        "<channel type='unix'><source mode='connect' path='/run/svc/shared.sock'/><target type='guestfwd' "
        "address='10.0.2.1' port='4601'/></channel>"
        "<graphics type='vnc' port='5901' autoport='no' socket='/run/vnc/a.sock'/>"
        "<vsock model='virtio'><cid auto='no' address='7'/></vsock></devices></domain>")
    out = rename_identity(root, "a", "web-2")
    assert root.findtext("name") == "web-2"
    assert out["uuid"] == root.findtext("uuid") != "4dea22b3-1d52-d8f3-2516-782e98ab3fa0"
    assert root.findtext("sysinfo/system/entry") == out["uuid"]  # libvirt refuses a mismatch
    assert root.find("genid").text is None  # empty: libvirt makes a new generation ID
    assert out["serial_logs"] == ["/var/log/kvmkit/web-2.serial.log", "/var/log/kvmkit/web-2.serial.log"]
    assert out["nvram"] == ("/var/lib/libvirt/qemu/nvram/a_VARS.fd", "/var/lib/libvirt/qemu/nvram/web-2_VARS.fd")
    assert root.findtext("os/nvram") == "/var/lib/libvirt/qemu/nvram/web-2_VARS.fd"
    agent, fwd, shared = root.iterfind("devices/channel/source")
    assert agent.get("path") is None  # libvirt's own socket path: it makes one for the clone
    assert fwd.get("path") == "/run/kvmkit/web-2-fwd.sock"  # the VM listens there: one of its own
    assert shared.get("path") == "/run/svc/shared.sock"  # a host service both VMs connect to
    gfx = root.find("devices/graphics")
    assert gfx.get("autoport") == "yes" and gfx.get("port") is None and gfx.get("socket") == "/run/vnc/web-2.sock"
    assert root.find("devices/vsock/cid").attrib == {"auto": "yes"}


@pytest.mark.fast
def test_rename_identity_handles_nvram_with_a_source_element():
    from kvmkit.service.copies.clone import rename_identity

    root = etree.fromstring("<domain><name>a</name><os firmware='efi'><type>hvm</type><nvram type='file' "
                            "template='/usr/share/OVMF/OVMF_VARS_4M.fd'><source file='/srv/nv/a_VARS.fd'/></nvram>"
                            "</os></domain>")
    out = rename_identity(root, "a", "b")
    assert out["nvram"] == ("/srv/nv/a_VARS.fd", "/srv/nv/b_VARS.fd")
    assert root.find("os/nvram/source").get("file") == "/srv/nv/b_VARS.fd" and root.find("os/nvram").text is None
    network = etree.fromstring("<domain><name>a</name><os><nvram type='network'><source protocol='iscsi' "
                               "name='iqn.2013-07.com.example:iscsi-nopool/0'><host name='example.com'/></source>"
                               "</nvram></os></domain>")
    with pytest.raises(InvalidState, match="NVRAM"):
        rename_identity(network, "a", "b")


@pytest.mark.fast
def test_disks_a_clone_copies_and_refuses():
    from kvmkit.service.copies.clone_xml import disk_refs, point_disk, set_macs

    root = etree.fromstring(
        "<domain><name>a</name><devices>"
        "<disk type='file' device='disk'><source file='/v/a.raw'/><target dev='vda' bus='virtio'/></disk>"
        "<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='/dev/vg0/a'/>"
        "<target dev='vdb' bus='virtio'/></disk>"
        "<disk type='volume' device='disk'><driver name='qemu'/><source pool='p' volume='a.qcow2'/>"
        "<target dev='vdc' bus='virtio'/></disk>"
        "<disk type='file' device='cdrom'><source file='/v/a.iso'/><target dev='sda' bus='sata'/><readonly/></disk>"
        "<interface type='network'><mac address='52:54:00:00:00:01'/><teaming type='persistent'/></interface>"
        "<interface type='network'><mac address='52:54:00:00:00:01'/><teaming type='transient' "
        "persistent='ua-0'/></interface><interface type='network'/></devices></domain>")
    refs = disk_refs(root, "a")
    assert [(r.target, r.kind, r.path, r.fmt, r.pool, r.volume) for r in refs] == [
        ("vda", "file", "/v/a.raw", None, None, None), ("vdb", "block", "/dev/vg0/a", "raw", None, None),
        ("vdc", "volume", None, None, "p", "a.qcow2")]
    point_disk(refs[0], "file", "raw", path="/v/b-vda.raw")  # no <driver>: one is added, format explicit
    assert etree.tostring(refs[0].el.find("driver")) == b'<driver name="qemu" type="raw"/>'
    point_disk(refs[1], "file", "raw", path="/var/lib/libvirt/images/b-vdb.raw")
    assert refs[1].el.get("type") == "file" and refs[1].el.find("source").attrib == {
        "file": "/var/lib/libvirt/images/b-vdb.raw"}
    fresh = iter(["52:54:00:00:00:0a", "52:54:00:00:00:0b"])
    assert set_macs(root, lambda: next(fresh)) == ["52:54:00:00:00:0a", "52:54:00:00:00:0b"]
    assert root.xpath("devices/interface/mac/@address") == ["52:54:00:00:00:0a"] * 2 + ["52:54:00:00:00:0b"]
    net = etree.fromstring("<domain><devices><disk type='network' device='disk'><source protocol='nbd' name='x'>"
                           "<host name='h'/></source><target dev='vda' bus='virtio'/></disk></devices></domain>")
    with pytest.raises(InvalidState, match=r"vda of 'a' is a network disk \(nbd\)"):
        disk_refs(net, "a")


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


def redefine(conn: libvirt.virConnect, guest, edit) -> libvirt.virDomain:
    """Define ``guest`` again with ``edit(root)`` applied to its inactive XML."""
    root = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    edit(root)
    return conn.defineXML(etree.tostring(root, encoding="unicode"))


def inactive(conn: libvirt.virConnect, name: str) -> etree._Element:
    return etree.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())


def marker_raw(workdir: Path, name: str, marker: str) -> Path:
    """A raw ext4 image with /kvmkit-marker (the micro-guest prints ``KVMKIT-DISK vda <marker>``)."""
    tree = workdir / f"{name}-tree"
    tree.mkdir()
    (tree / "kvmkit-marker").write_text(marker + "\n")
    raw = workdir / f"{name}.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw), "32M"], check=True)
    return raw


def add_disk(xml: str):
    return lambda root: root.find("devices").insert(0, etree.fromstring(xml))


@pytest.mark.guest
def test_uefi_clone_gets_its_own_nvram_copy(conn, micro_guest, workdir, prefix):
    guest = micro_guest("uefi", start=False)
    nv = workdir / f"{guest.name}_VARS.fd"

    def uefi(root: etree._Element) -> None:  # libvirt's <nvram type='file'><source file=.../> form
        loader = etree.Element("loader", readonly="yes", type="pflash")
        loader.text = "/usr/share/OVMF/OVMF_CODE_4M.fd"
        nvram = etree.Element("nvram", type="file", template="/usr/share/OVMF/OVMF_VARS_4M.fd")
        etree.SubElement(nvram, "source", file=str(nv))
        root.find("os/type").addnext(loader)
        loader.addnext(nvram)

    redefine(conn, guest, uefi)
    shutil.copyfile("/usr/share/OVMF/OVMF_VARS_4M.fd", nv)
    res = clone_vm(conn, guest.name, f"{prefix}ucl")
    own = workdir / f"{prefix}ucl_VARS.fd"
    assert res["nvram"] == str(own)
    assert inactive(conn, f"{prefix}ucl").find("os/nvram/source").get("file") == str(own)
    assert inactive(conn, guest.name).find("os/nvram/source").get("file") == str(nv)
    assert own.read_bytes() == nv.read_bytes() and own.stat().st_ino != nv.stat().st_ino
    assert not [a for a in os.listxattr(own) if a.startswith("trusted.")]
    clone = conn.lookupByName(f"{prefix}ucl")
    clone.create()  # QEMU opens the clone's own NVRAM file
    try:
        live = etree.fromstring(clone.XMLDesc(0).encode())
        assert live.find("os/nvram/source").get("file") == str(own)
    finally:
        clone.destroy()


@pytest.mark.guest
def test_clone_of_a_pool_volume_defined_without_driver_keeps_its_format_and_boots(conn, micro_guest, workdir,
                                                                                   prefix):
    from tests.service.copies.test_backup import marker_disk
    from tests.support.serial import SerialLog

    marker = f"nodrv-{prefix}"
    pool = conn.storagePoolLookupByName("default")
    pool_dir = Path(etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path"))
    vol = pool_dir / f"{prefix}nodrv.qcow2"
    shutil.move(marker_disk(workdir, f"{prefix}m", marker), vol)
    pool.refresh(0)
    guest = micro_guest("nodrv", start=False)
    redefine(conn, guest, add_disk(f"<disk type='volume' device='disk'><source pool='default' volume='{vol.name}'/>"
                                   "<target dev='vda' bus='virtio'/></disk>"))  # no <driver>: qcow2 from the pool
    res = clone_vm(conn, guest.name, f"{prefix}ncl")
    assert res["disks"] == [{"target": "vda", "path": str(pool_dir / f"{prefix}ncl-vda.qcow2"), "format": "qcow2",
                             "backing": None}]
    disk = inactive(conn, f"{prefix}ncl").find("devices/disk")
    assert disk.get("type") == "volume" and disk.find("source").attrib == {"pool": "default",
                                                                          "volume": f"{prefix}ncl-vda.qcow2"}
    assert disk.find("driver").get("type") == "qcow2"
    conn.lookupByName(f"{prefix}ncl").create()
    SerialLog(workdir / f"{prefix}ncl.serial.log").wait_for(f"KVMKIT-DISK vda {marker}", timeout=BOOT_TIMEOUT)


@pytest.mark.guest
def test_clone_of_a_raw_block_device_disk_copies_it_into_the_default_pool_and_boots(conn, micro_guest, workdir,
                                                                                    prefix, loop_device):
    from tests.support.serial import SerialLog

    marker = f"blk-{prefix}"
    dev = loop_device(64)
    with open(dev, "r+b") as out:
        out.write(marker_raw(workdir, f"{prefix}b", marker).read_bytes())
    guest = micro_guest("blk", start=False)
    redefine(conn, guest, add_disk(f"<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
                                   f"<source dev='{dev}'/><target dev='vda' bus='virtio'/></disk>"))
    res = clone_vm(conn, guest.name, f"{prefix}bcl")
    pool_dir = Path(etree.fromstring(conn.storagePoolLookupByName("default").XMLDesc(0).encode())
                    .findtext("target/path"))
    dst = pool_dir / f"{prefix}bcl-vda.raw"
    assert res["disks"] == [{"target": "vda", "path": str(dst), "format": "raw", "backing": None,
                             "copied_from": dev}]
    disk = inactive(conn, f"{prefix}bcl").find("devices/disk")
    assert (disk.get("type"), disk.find("source").get("file")) == ("file", str(dst))
    assert inactive(conn, guest.name).find("devices/disk/source").get("dev") == dev  # the source keeps its device
    conn.lookupByName(f"{prefix}bcl").create()
    SerialLog(workdir / f"{prefix}bcl.serial.log").wait_for(f"KVMKIT-DISK vda {marker}", timeout=BOOT_TIMEOUT)


@pytest.mark.guest
def test_clone_keeps_guestfwd_sockets_and_refuses_network_disks_leaving_nothing(conn, micro_guest, workdir,
                                                                                prefix):
    guest = micro_guest("fwd", start=False)
    sock = workdir / "fwd.sock"
    redefine(conn, guest, lambda root: root.find("devices").append(etree.fromstring(
        f"<channel type='unix'><source mode='bind' path='{sock}'/><target type='guestfwd' address='10.0.2.1' "
        "port='4600'/></channel>")))
    clone_vm(conn, guest.name, f"{prefix}fcl")
    ch = inactive(conn, f"{prefix}fcl").xpath("devices/channel[target/@type='guestfwd']/source")[0]
    assert ch.get("path") == str(workdir / f"{prefix}fcl-fwd.sock")
    other = micro_guest("net", start=False)
    redefine(conn, other, add_disk("<disk type='network' device='disk'><driver name='qemu' type='raw'/>"
                                   "<source protocol='nbd' name='export'><host name='127.0.0.1' port='10809'/></source>"
                                   "<target dev='vda' bus='virtio'/></disk>"))
    before = sorted(os.listdir(workdir))
    with pytest.raises(InvalidState, match=r"vda of .* is a network disk \(nbd\)"):
        clone_vm(conn, other.name, f"{prefix}ncl")
    assert f"{prefix}ncl" not in [d.name() for d in conn.listAllDomains()] and sorted(os.listdir(workdir)) == before
