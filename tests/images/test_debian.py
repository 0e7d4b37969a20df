"""The debian-12 image: built by debootstrap (cached), sealed as a template, boots to a login prompt under TCG."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.images import debian, qemu_img
from tests.support.serial import SerialLog


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


def _domain_xml(name: str, image: dict[str, str], disk: Path, log: Path, virt_type: str) -> str:
    dom = etree.Element("domain", type=virt_type)
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "1024"
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    etree.SubElement(os_el, "kernel").text = image["kernel"]
    etree.SubElement(os_el, "initrd").text = image["initrd"]
    etree.SubElement(os_el, "cmdline").text = image["cmdline"]
    features = etree.SubElement(dom, "features")
    etree.SubElement(features, "acpi")
    etree.SubElement(features, "apic")
    devices = etree.SubElement(dom, "devices")
    d = etree.SubElement(devices, "disk", type="file", device="disk")
    etree.SubElement(d, "driver", name="qemu", type="qcow2")
    etree.SubElement(d, "source", file=str(disk))
    etree.SubElement(d, "target", dev="vda", bus="virtio")
    iface = etree.SubElement(devices, "interface", type="network")
    etree.SubElement(iface, "source", network="default")
    etree.SubElement(iface, "model", type="virtio")
    serial = etree.SubElement(devices, "serial", type="pty")
    etree.SubElement(serial, "log", file=str(log), append="off")
    etree.SubElement(serial, "target", port="0")
    console = etree.SubElement(devices, "console", type="pty")
    etree.SubElement(console, "target", type="serial", port="0")
    rng = etree.SubElement(devices, "rng", model="virtio")
    etree.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    return etree.tostring(dom, encoding="unicode")


@pytest.mark.full
@pytest.mark.timeout(900)
def test_boots_to_login_prompt_under_tcg(conn, image, workdir, prefix):
    disk = workdir / "overlay.qcow2"
    qemu_img.create(disk, "qcow2", 0, backing=image["path"], backing_fmt="qcow2")  # the cached image stays pristine
    log = workdir / "debian.serial.log"
    dom = conn.defineXML(_domain_xml(f"{prefix}debian", image, disk, log, "qemu"))
    dom.create()
    serial = SerialLog(log)
    serial.wait_for(r"login:", timeout=600)  # ~45 s on an idle host; the CPU is shared with other work
    text = serial.text()
    assert "Debian GNU/Linux 12" in text
    assert "Failed to start" not in text, text[-3000:]
