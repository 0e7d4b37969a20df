"""Converting a shut-off VM's raw disk to qcow2 switches its definition, and the VM still boots from it."""

from __future__ import annotations

import subprocess

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput, InvalidState, NotFound
from kvmkit.images import qemu_img
from kvmkit.service.storage.disk_convert import convert_vm_disk


def _disk(dom) -> tuple[str, str]:
    root = etree.fromstring(dom.XMLDesc(0))
    disk = root.find("devices/disk")
    return disk.find("source").get("file"), disk.find("driver").get("type")


@pytest.mark.guest
def test_raw_disk_converted_to_qcow2_still_boots(conn, workdir, micro_guest, prefix):
    tree = workdir / "fs"
    tree.mkdir()
    marker = f"{prefix}converted"
    (tree / "kvmkit-marker").write_text(marker + "\n")
    raw = workdir / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(32 * 1024**2)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw)], check=True)
    guest = micro_guest("conv", start=False, disks=[{"path": str(raw), "format": "raw"}])
    qcow = workdir / "disk.qcow2"
    seen: list[float] = []
    result = convert_vm_disk(conn, guest.name, raw, qcow, "qcow2", progress=seen.append)
    assert result["old_format"] == "raw" and result["format"] == "qcow2" and seen[-1] == 100.0
    assert _disk(conn.lookupByName(guest.name)) == (str(qcow), "qcow2")
    assert qemu_img.probe_format(qcow) == "qcow2" and raw.exists()
    guest.dom.create()
    guest.log.wait_for(rf"KVMKIT-DISK vda {marker}")
    with pytest.raises(InvalidState, match="running"):
        convert_vm_disk(conn, guest.name, qcow, workdir / "again.raw", "raw")
    assert not (workdir / "again.raw").exists()


@pytest.mark.guest
def test_convert_refusals(conn, workdir, micro_guest, prefix):
    disk = workdir / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    guest = micro_guest("refuse", start=False, disks=[{"path": str(disk), "format": "qcow2"}])
    other = workdir / "other.raw"
    other.write_bytes(b"\0" * 1024)
    with pytest.raises(InvalidInput, match="has no disk"):
        convert_vm_disk(conn, guest.name, other, workdir / "o.qcow2", "qcow2")
    with pytest.raises(NotFound, match="not found"):
        convert_vm_disk(conn, f"{prefix}missing", disk, workdir / "o.qcow2", "qcow2")
    with pytest.raises(InvalidInput, match="unknown image format"):
        convert_vm_disk(conn, guest.name, disk, workdir / "o.vmdk", "vmdk")
    assert not (workdir / "o.qcow2").exists()
    assert _disk(guest.dom) == (str(disk), "qcow2")
