"""Backup and restore on qemu:///system: a running guest's backup restores under a new name and boots;
corrupted backups are refused before anything is defined."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput
from kvmkit.service.copies.backup import backup_vm
from kvmkit.service.copies.restore import restore_vm
from tests.service.copies.test_snapshots import make_disk
from tests.support.serial import SerialLog

BOOT_TIMEOUT = 60


def marker_disk(workdir: Path, name: str, marker: str) -> str:
    """A qcow2 disk holding an ext4 file system with /kvmkit-marker (the micro-guest prints it)."""
    tree = workdir / f"{name}-tree"
    tree.mkdir()
    (tree / "kvmkit-marker").write_text(marker + "\n")
    raw = workdir / f"{name}.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw), "32M"], check=True)
    out = workdir / f"{name}.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return str(out)


def pool_volumes(conn: libvirt.virConnect, prefix: str) -> list[str]:
    pool = conn.storagePoolLookupByName("default")
    pool.refresh(0)
    return [v.name() for v in pool.listAllVolumes(0) if v.name().startswith(prefix)]


@pytest.mark.guest
def test_backup_of_running_guest_restores_under_new_name_and_boots(conn, micro_guest, workdir, prefix):
    marker = f"backup-{prefix}"
    guest = micro_guest("bk", disks=[{"path": marker_disk(workdir, f"{prefix}bk", marker), "format": "qcow2"}],
                        networks=[{"network": "default"}])
    guest.log.wait_for(f"KVMKIT-DISK vda {marker}", timeout=BOOT_TIMEOUT)
    seen: list[float] = []
    dest = workdir / "backup"
    manifest = backup_vm(conn, guest.name, dest, progress=seen.append)
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)
    assert guest.dom.isActive() and guest.dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert manifest["consistency"].startswith("live") and "crash-consistent" in manifest["consistency"]
    assert sorted(p.name for p in dest.iterdir()) == ["domain.xml", "manifest.json", "vda.qcow2"]
    assert json.loads((dest / "manifest.json").read_text())["sha256"] == manifest["sha256"]
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "qcow2", str(dest / "vda.qcow2")],
                                     capture_output=True, text=True, check=True).stdout)
    assert "backing-filename" not in info
    new = f"{prefix}rst"
    res = restore_vm(conn, dest, name=new)
    assert res["name"] == new and res["renamed"] and res["uuid"] != guest.dom.UUIDString()
    assert pool_volumes(conn, prefix) == [f"{new}-vda.qcow2"]
    restored = conn.lookupByName(new)
    root = etree.fromstring(restored.XMLDesc(0).encode())
    assert root.find("devices/disk/source").get("file") == res["disks"][0]["path"]
    orig_mac = etree.fromstring(guest.dom.XMLDesc(0).encode()).find("devices/interface/mac").get("address")
    assert res["macs"] and res["macs"][0] != orig_mac
    log = root.find("devices/serial/log").get("file")
    assert log == str(workdir / f"{new}.serial.log")
    restored.create()
    SerialLog(log).wait_for(f"KVMKIT-DISK vda {marker}", timeout=BOOT_TIMEOUT)
    assert guest.dom.isActive()


@pytest.mark.guest
def test_corrupted_backup_is_refused_and_offline_round_trip(conn, micro_guest, workdir, prefix):
    guest = micro_guest("off", start=False, disks=[{"path": make_disk(workdir, f"{prefix}off"), "format": "qcow2"}])
    uuid = guest.dom.UUIDString()
    dest = workdir / "backup"
    manifest = backup_vm(conn, guest.name, dest)
    assert manifest["consistency"].startswith("offline")
    with pytest.raises(Conflict, match="not an empty directory"):
        backup_vm(conn, guest.name, dest)
    with pytest.raises(Conflict, match="exists already"):  # the original is still defined
        restore_vm(conn, dest)
    disk = dest / "vda.qcow2"
    data = bytearray(disk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    disk.write_bytes(bytes(data))
    with pytest.raises(InvalidInput, match=r"vda\.qcow2 is corrupt"):
        restore_vm(conn, dest, name=f"{prefix}bad")
    assert f"{prefix}bad" not in [d.name() for d in conn.listAllDomains()]
    assert pool_volumes(conn, prefix) == []
    data[len(data) // 2] ^= 0xFF  # repair, then restore under the original name once it is gone
    disk.write_bytes(bytes(data))
    guest.dom.undefine()
    res = restore_vm(conn, dest)
    assert res["name"] == guest.name and res["uuid"] == uuid and not res["renamed"]
    assert pool_volumes(conn, prefix) == [f"{guest.name}-vda.qcow2"]


@pytest.mark.guest
def test_uefi_nvram_is_backed_up_and_restored(conn, micro_guest, workdir, prefix):
    from tests.service.copies.test_snapshots import make_uefi

    guest = micro_guest("nv", start=False, disks=[{"path": make_disk(workdir, f"{prefix}nv"), "format": "qcow2"}])
    make_uefi(conn, guest, workdir)
    nvram = workdir / f"{guest.name}_VARS.fd"
    nvram.write_bytes(b"kvmkit-nvram-" + bytes(range(256)) * 16)
    dest = workdir / "backup"
    manifest = backup_vm(conn, guest.name, dest)
    assert manifest["nvram"] == "nvram.fd" and "nvram.fd" in manifest["sha256"]
    res = restore_vm(conn, dest, name=f"{prefix}nv2")
    root = etree.fromstring(conn.lookupByName(res["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    restored = Path(root.findtext("os/nvram"))
    assert restored == workdir / f"{prefix}nv2_VARS.fd" and restored.read_bytes() == nvram.read_bytes()
    guest.dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
    with pytest.raises(Conflict, match="NVRAM file"):  # no --name: the original's NVRAM file is still there
        restore_vm(conn, dest)
    assert guest.name not in [d.name() for d in conn.listAllDomains()]


@pytest.mark.fast
def test_damaged_or_forged_manifests_are_refused(test_conn, tmp_path):
    from kvmkit.errors import NotFound

    with pytest.raises(NotFound, match="not a kvmkit backup"):
        restore_vm(test_conn, tmp_path)
    manifest = tmp_path / "manifest.json"
    for body, msg in (("{", "not valid JSON"), ('{"format": "x"}', "not a kvmkit-backup"),
                      ('{"format": "kvmkit-backup", "version": 1}', "lacks its file list"),
                      ('{"format": "kvmkit-backup", "version": 1, "domain_xml": "domain.xml", "disks": [], '
                       '"sha256": {"../../etc/passwd": "00"}}', "unsafe file")):
        manifest.write_text(body)
        with pytest.raises(InvalidInput, match=msg):
            restore_vm(test_conn, tmp_path)


@pytest.mark.guest
def test_backup_keeps_the_vnc_password_in_a_private_file_and_restore_brings_it_back(conn, micro_guest, workdir,
                                                                                      prefix):
    guest = micro_guest("pw", start=False, disks=[{"path": make_disk(workdir, f"{prefix}pw"), "format": "qcow2"}])
    root = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    etree.SubElement(root.find("devices"), "graphics", type="vnc", port="-1", autoport="yes", listen="127.0.0.1",
                     passwd="kvmkitpw")
    conn.defineXML(etree.tostring(root, encoding="unicode"))
    dest = workdir / "backup"
    manifest = backup_vm(conn, guest.name, dest)
    assert (dest / "domain.xml").stat().st_mode & 0o777 == 0o600
    assert manifest["domain_xml_secrets"] is True and manifest["private_files"] == ["domain.xml"]
    assert etree.fromstring((dest / "domain.xml").read_bytes()).find("devices/graphics").get("passwd") == \
        "kvmkitpw"
    res = restore_vm(conn, dest, name=f"{prefix}pw2")
    secure = conn.lookupByName(res["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    assert etree.fromstring(secure.encode()).find("devices/graphics").get("passwd") == "kvmkitpw"


@pytest.mark.guest
def test_uefi_nvram_in_source_form_is_backed_up_and_restored_under_a_new_name(conn, micro_guest, workdir, prefix):
    guest = micro_guest("nvs", start=False, disks=[{"path": make_disk(workdir, f"{prefix}nvs"), "format": "qcow2"}])
    nvram = workdir / f"{guest.name}_VARS.fd"
    root = etree.fromstring(guest.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    loader = etree.Element("loader", readonly="yes", type="pflash")
    loader.text = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    nv = etree.Element("nvram", type="file", template="/usr/share/OVMF/OVMF_VARS_4M.fd")
    etree.SubElement(nv, "source", file=str(nvram))
    root.find("os/type").addnext(loader)
    loader.addnext(nv)
    conn.defineXML(etree.tostring(root, encoding="unicode"))
    nvram.write_bytes(b"kvmkit-nvram-" + bytes(range(256)) * 16)
    dest = workdir / "backup"
    manifest = backup_vm(conn, guest.name, dest)
    assert manifest["nvram"] == "nvram.fd" and (dest / "nvram.fd").read_bytes() == nvram.read_bytes()
    res = restore_vm(conn, dest, name=f"{prefix}nvs2")
    root = etree.fromstring(conn.lookupByName(res["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    restored = Path(root.find("os/nvram/source").get("file"))
    assert restored == workdir / f"{prefix}nvs2_VARS.fd" and restored.read_bytes() == nvram.read_bytes()
