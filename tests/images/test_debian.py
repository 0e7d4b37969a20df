"""The debian-12 image: built by debootstrap (cached), sealed as a template.

That it boots is shown where it is booted anyway (each Debian boot costs about a minute under TCG): by its
kernel with a cloud-init seed, cleanly (tests/service/guests/test_debian_guest.py, the shared guest's first
boot), and through its own GRUB under UEFI once virt-v2v converted a copy (tests/service/v2v/test_import_vms.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.images import debian, qemu_img


def _host_dev() -> list[tuple[str, int, int, int]]:
    return [(n, st.st_uid, st.st_gid, st.st_mode) for n in sorted(os.listdir("/dev"))
            if not os.path.islink(f"/dev/{n}") and (st := os.stat(f"/dev/{n}"))]


@pytest.fixture(scope="module")
def image() -> dict[str, str]:
    before = _host_dev()
    built = debian.build(None)
    assert _host_dev() == before, "building the image changed the host's /dev (owners or modes)"
    return built


@pytest.mark.fast
def test_chroot_mounts_keep_the_host_dev_and_sys_out_of_reach(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    before = _host_dev()
    with debian._Mounts(root):
        dev = root / "dev"
        assert dev.stat().st_dev != Path("/dev").stat().st_dev, "the chroot's /dev must not be the host's"
        assert sorted(p.name for p in dev.iterdir()) == sorted(
            [n for n, _, _ in debian._DEV_NODES] + ["pts", "ptmx", "fd", "stdin", "stdout", "stderr"])
        os.chown(dev / "null", 0, 104)  # what a package script in the chroot may do to its nodes
        (dev / "null").write_bytes(b"x")
        with (dev / "urandom").open("rb") as rnd:
            assert len(rnd.read(16)) == 16
        with pytest.raises(OSError):
            (root / "sys" / "kernel" / "uevent_helper").write_text("")  # read-only
    assert _host_dev() == before
    assert not [m for m in Path("/proc/self/mounts").read_text().splitlines() if str(root) in m]


def _debugfs(raw: Path, command: str) -> str:
    return subprocess.run(["debugfs", "-R", command, str(raw)], capture_output=True, text=True).stdout


@pytest.mark.fast
def test_out_must_be_qcow2():
    with pytest.raises(InvalidInput, match="qcow2"):
        debian.build("/tmp/image.raw")


@pytest.mark.full
def test_image_is_sealed(image, workdir, request):
    assert qemu_img.probe_format(image["path"]) == "qcow2"
    info = qemu_img.info(image["path"], "qcow2")
    assert "backing-filename" not in info
    raw = workdir / "root.raw"
    qemu_img.convert(image["path"], raw, "qcow2", "raw")  # one ext4 file system, no partition table
    request.addfinalizer(lambda: raw.unlink(missing_ok=True))
    assert "ext4" in subprocess.run(["blkid", "-o", "value", "-s", "TYPE", str(raw)], capture_output=True,
                                    text=True).stdout
    fstab = _debugfs(raw, "cat /etc/fstab")
    assert "LABEL=root / ext4" in fstab and "swap" not in fstab.split("#", 1)[-1].split("\n", 1)[1]
    assert "Size: 0" in _debugfs(raw, "stat /etc/machine-id")
    assert "ssh_host_" not in _debugfs(raw, "ls /etc/ssh")
    assert "70-persistent-net" not in _debugfs(raw, "ls /etc/udev/rules.d")
    assert "NoCloud" in _debugfs(raw, "cat /etc/cloud/cloud.cfg.d/90-kvmkit.cfg")
    assert "Name=en* eth*" in _debugfs(raw, "cat /etc/systemd/network/20-kvmkit-dhcp.network")
    status = _debugfs(raw, "cat /var/lib/dpkg/status")
    for pkg in ("systemd", "cloud-init", "qemu-guest-agent", "openssh-server", "python3-cffi-backend"):
        assert f"Package: {pkg}\nStatus: install ok installed" in status, pkg
    assert "kvmkit-ssh-keygen.service" in _debugfs(raw, "ls /etc/systemd/system/ssh.service.requires")


@pytest.mark.full
def test_build_is_cached_and_out_copies(image, workdir):
    entry = Path(image["path"]).parent
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entry.iterdir()}
    again = debian.build(None)
    assert again == image
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entry.iterdir()} == before, "rebuilt"
    out = debian.build(str(workdir / "d12.qcow2"))
    assert Path(out["path"]).stat().st_size == Path(image["path"]).stat().st_size
    assert Path(out["kernel"]).exists() and Path(out["initrd"]).exists()
