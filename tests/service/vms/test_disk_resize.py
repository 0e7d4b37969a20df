"""Resizing a disk through its VM (service/vms/disk_resize.py): live on a running micro-guest (the guest sees the
new size), offline through qemu-img or the pool, and the refusals that keep linked clones, templates and
data safe."""

from __future__ import annotations

import subprocess

import libvirt
import pytest

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.images import qemu_img
from kvmkit.service.storage import volumes
from kvmkit.service.vms.disk_resize import resize_disk

MIB = 1024 * 1024


def _guest_sectors(conn, guest, dev: str = "vda", tag: str = "KT-SZ") -> int:
    """/sys/block/DEV/size (512-byte sectors) as the guest reads it, typed on its serial shell."""
    mark = guest.log.offset()
    stream = conn.newStream(0)
    guest.dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    try:
        stream.send(f"\necho {tag}-$(cat /sys/block/{dev}/size)-END\n".encode())
        match = guest.log.wait_for(rf"{tag}-(\d+)-END", timeout=120, after=mark)
    finally:
        stream.abort()
    return int(match.group(1))


def _image(path, fmt: str, size: str = "32M", backing: str | None = None) -> str:
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    if backing:
        cmd += ["-b", backing, "-F", "qcow2"]
    subprocess.run([*cmd, str(path), *([] if backing else [size])], check=True)
    return str(path)


@pytest.mark.guest
def test_a_running_guest_sees_its_raw_disk_grow(conn, micro_guest, workdir):
    raw = _image(workdir / "live.raw", "raw")
    guest = micro_guest("grow", disks=[{"path": raw, "format": "raw"}])
    guest.log.wait_status()
    assert _guest_sectors(conn, guest, tag="KT-SZ0") == 32 * MIB // 512
    out = resize_disk(conn, guest.name, "vda", "48M")
    assert out["live"] and out["changed"] and out["old_capacity"] == 32 * MIB and out["capacity"] == 48 * MIB
    assert out["format"] == "raw" and out["path"] == raw
    assert _guest_sectors(conn, guest, tag="KT-SZ1") == 48 * MIB // 512  # the guest sees it at once
    with pytest.raises(InvalidState, match="cannot shrink disk vda of running VM") as err:
        resize_disk(conn, guest.name, "vda", "16M", allow_shrink=True)
    assert "shut the VM down" in (err.value.hint or "")
    assert resize_disk(conn, guest.name, "vda", "48M")["changed"] is False
    with pytest.raises(NotFound, match="has no disk vdz"):
        resize_disk(conn, guest.name, "vdz", "1G")
    with pytest.raises(InvalidInput, match="invalid disk target"):
        resize_disk(conn, guest.name, "../x", "1G")


@pytest.mark.guest
def test_a_shut_off_vm_resizes_its_image_and_shrinks_only_when_allowed(conn, micro_guest, workdir):
    img = _image(workdir / "off.qcow2", "qcow2")
    guest = micro_guest("off", start=False, disks=[{"path": img, "format": "qcow2"}])
    out = resize_disk(conn, guest.name, "vda", "64M")
    assert not out["live"] and out["capacity"] == 64 * MIB and out["pool"] is None
    assert qemu_img.info(img, "qcow2")["virtual-size"] == 64 * MIB
    with pytest.raises(InvalidInput, match="smaller than disk vda") as err:
        resize_disk(conn, guest.name, "vda", "16M")
    assert "allow_shrink" in (err.value.hint or "")
    assert qemu_img.info(img, "qcow2")["virtual-size"] == 64 * MIB
    shrunk = resize_disk(conn, guest.name, "vda", "16M", allow_shrink=True)
    assert shrunk["capacity"] == 16 * MIB and "data past the new end is gone" in shrunk["warning"]
    assert qemu_img.info(img, "qcow2")["virtual-size"] == 16 * MIB
    odd = resize_disk(conn, guest.name, "vda", 16 * MIB + 100)  # bytes from a library caller: whole sectors
    assert odd["capacity"] == 16 * MIB + 512


@pytest.mark.guest
def test_an_image_a_linked_clone_reads_is_not_resized(conn, micro_guest, workdir):
    base = _image(workdir / "base.qcow2", "qcow2")
    _image(workdir / "clone.qcow2", "qcow2", backing=base)
    a = micro_guest("base", start=False, disks=[{"path": base, "format": "qcow2"}])
    micro_guest("clone", start=False, disks=[{"path": str(workdir / "clone.qcow2"), "format": "qcow2"}])
    with pytest.raises(Conflict, match=r"also used by VM .*clone \(as its disk or a backing file\)"):
        resize_disk(conn, a.name, "vda", "64M")
    assert qemu_img.info(base, "qcow2")["virtual-size"] == 32 * MIB


@pytest.mark.guest
def test_pool_volumes_resize_through_the_pool_and_bases_are_refused(conn, micro_guest, prefix):
    vol = volumes.create_volume(conn, "default", f"{prefix}d.qcow2", "16M", fmt="qcow2")
    base = volumes.create_volume(conn, "default", f"{prefix}b.qcow2", "16M", fmt="qcow2")
    volumes.clone_volume(conn, "default", base["name"], f"{prefix}b-linked.qcow2", linked=True)
    guest = micro_guest("pool", start=False, disks=[{"path": vol["path"], "format": "qcow2"},
                                                     {"path": base["path"], "format": "qcow2"}])
    out = resize_disk(conn, guest.name, "vda", "32M")
    assert out["pool"] == "default" and out["volume"] == f"{prefix}d.qcow2" and out["capacity"] == 32 * MIB
    assert volumes.volume_info(conn, "default", f"{prefix}d.qcow2")["capacity"] == 32 * MIB
    with pytest.raises(Conflict, match="backing file of"):
        resize_disk(conn, guest.name, "vdb", "32M")
    assert volumes.volume_info(conn, "default", base["name"])["capacity"] == 16 * MIB
