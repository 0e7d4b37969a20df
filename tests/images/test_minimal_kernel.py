"""The minimal guest kernel: its config fragment, its (cached) build, and a micro-guest booted with it on
qemu:///system that does everything the cloud-kernel micro-guest does (disk, DHCP, vCPU hot-plug, ACPI off)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import libvirt
import pytest

from kvmkit.errors import OperationFailed
from kvmkit.images import micro, minimal_kernel
from tests.support.micro_domain import MicroDomain
from tests.support.serial import SerialLog

BOOT_TIMEOUT = 180  # a guard, not a claim: ~1 s to the ready marker on an idle host


@pytest.mark.fast
def test_fragment_parses_and_keeps_the_micro_guest_needs():
    opts = minimal_kernel.fragment_options()
    for name in ("CONFIG_PVH", "CONFIG_ACPI_BUTTON", "CONFIG_INPUT_EVDEV", "CONFIG_VIRTIO_PCI", "CONFIG_VIRTIO_NET",
                 "CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS", "CONFIG_PACKET", "CONFIG_HOTPLUG_CPU",
                 "CONFIG_ACPI_HOTPLUG_CPU", "CONFIG_VIRTIO_BALLOON", "CONFIG_SERIAL_8250_CONSOLE", "CONFIG_DEVTMPFS"):
        assert opts[name] == "y", name
    assert opts["CONFIG_MODULES"] == "n"


@pytest.mark.fast
def test_missing_options_reports_what_kconfig_dropped():
    config = "CONFIG_PVH=y\nCONFIG_NR_CPUS=64\n# CONFIG_MODULES is not set\nCONFIG_FTRACE=y\n"
    wanted = {"CONFIG_PVH": "y", "CONFIG_NR_CPUS": "64", "CONFIG_MODULES": "n", "CONFIG_FTRACE": "n",
              "CONFIG_EXT4_FS": "y"}
    assert minimal_kernel.missing_options(config, wanted) == ["CONFIG_FTRACE=n (got y)", "CONFIG_EXT4_FS=y (got n)"]


@pytest.mark.fast
def test_cache_key_follows_source_version_and_config():
    base = minimal_kernel.cache_key("6.1.1-1", "CONFIG_PVH=y\n", {})
    assert base == minimal_kernel.cache_key("6.1.1-1", "CONFIG_PVH=y\n", {})
    assert base != minimal_kernel.cache_key("6.1.2-1", "CONFIG_PVH=y\n", {})
    assert base != minimal_kernel.cache_key("6.1.1-1", "CONFIG_PVH=n\n", {})


@pytest.mark.fast
def test_apply_patches_is_idempotent_and_reversible(tmp_path):
    (tmp_path / "a.c").write_text("one\ntwo\nthree\n")
    patch = "--- a/a.c\n+++ b/a.c\n@@ -1,3 +1,3 @@\n one\n-two\n+TWO\n three\n"
    minimal_kernel.apply_patches(tmp_path, {"x.patch": patch})
    minimal_kernel.apply_patches(tmp_path, {"x.patch": patch})  # already applied: nothing to do
    assert (tmp_path / "a.c").read_text() == "one\nTWO\nthree\n"
    minimal_kernel.apply_patches(tmp_path, {})  # no longer wanted: taken out again
    assert (tmp_path / "a.c").read_text() == "one\ntwo\nthree\n"
    (tmp_path / "a.c").write_text("something else\n")
    with pytest.raises(OperationFailed, match=r"patch x\.patch does not apply"):
        minimal_kernel.apply_patches(tmp_path, {"x.patch": patch})


@pytest.mark.fast
def test_shipped_patches_are_in_the_cache_key():
    assert "minimal_kernel-no-init-poison.patch" in minimal_kernel.patches()
    assert minimal_kernel.cache_key("1", "C\n", {}) != minimal_kernel.cache_key("1", "C\n", {"p": "x"})


@pytest.mark.fast
def test_prune_keeps_only_the_current_result_source_and_objects(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMKIT_DATA_DIR", str(tmp_path))
    root = tmp_path / "cache" / "minimal-kernel"
    for rel in ("0123456789abcdef", "fedcba9876543210", "source/v1", "obj/v1", "obj/v0", "elsewhere/v0"):
        (root / rel).mkdir(parents=True)
    (root / "source" / "v0").symlink_to(root / "elsewhere" / "v0")
    minimal_kernel._prune(keep="0123456789abcdef", version="v1")
    assert sorted(p.name for p in root.iterdir()) == ["0123456789abcdef", "elsewhere", "obj", "source"]
    assert [p.name for p in (root / "source").iterdir()] == ["v1"]
    assert [p.name for p in (root / "obj").iterdir()] == ["v1"]


@pytest.fixture(scope="module")
def built() -> tuple[minimal_kernel.MinimalKernel, micro.MicroImage]:
    kernel = minimal_kernel.build()  # minutes the first time, then cached
    return kernel, micro.build(kernel=minimal_kernel.kernel_tree(kernel))


@pytest.mark.full
def test_build_is_cached_and_has_everything_built_in(built, tmp_path):
    kernel, image = built
    entry = Path(kernel.vmlinux).parent
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entry.iterdir()}
    again = minimal_kernel.build()
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in entry.iterdir()}
    assert after == before, "a cached kernel must not be rebuilt (its cache entry was rewritten)"
    assert again == kernel
    assert set(micro.GUEST_MODULES) <= minimal_kernel.builtin_modules(kernel)
    config = Path(kernel.config).read_text()
    assert minimal_kernel.missing_options(config, minimal_kernel.fragment_options()) == []
    notes = subprocess.run(["readelf", "-n", kernel.vmlinux], capture_output=True, text=True, check=True).stdout
    assert "Xen" in notes and "0x00000012" in notes, "vmlinux has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
    assert Path(kernel.bzimage).read_bytes()[0x202:0x206] == b"HdrS"
    # The micro image carries the bzImage and the PVH vmlinux extracted from it, and no modules.
    assert Path(image.kernel).read_bytes()[0x202:0x206] == b"HdrS"
    assert image.pvh_kernel and Path(image.pvh_kernel).read_bytes()[:4] == b"\x7fELF", image.pvh_note
    assert image.kernel_version.startswith(kernel.kernel_release) and "minimal" in image.kernel_version
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=Path(image.initrd).read_bytes(), capture_output=True,
                             check=True).stdout.decode().split()
    assert "init" in listing and not [p for p in listing if p.endswith(".ko")]
    assert image.key != micro.build().key, "the minimal-kernel image must not share the cloud kernel's cache entry"


def _marker_disk(workdir: Path, marker: str) -> str:
    tree = workdir / "disk-tree"
    tree.mkdir()
    (tree / "kvmkit-marker").write_text(marker + "\n")
    raw = workdir / "disk.raw"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw), "32M"], check=True)
    return str(raw)


@pytest.mark.full
def test_micro_guest_with_minimal_kernel_boots_and_shuts_down(conn, prefix, workdir, virt_type, built):
    """Through PVH (the ELF vmlinux, as the fast-boot profile boots it): disk, DHCP, hot-plug, power button."""
    _kernel, image = built
    name = f"{prefix}minimal"
    log = SerialLog(workdir / f"{name}.serial.log")
    assert image.pvh_kernel, image.pvh_note
    spec = MicroDomain(name=name, kernel=image.pvh_kernel, initrd=image.initrd, cmdline=image.cmdline,
                       serial_log=str(log.path), virt_type=virt_type, vcpus=1, max_vcpus=2,
                       disks=[{"path": _marker_disk(workdir, prefix), "format": "raw"}],
                       networks=[{"network": "default"}])
    dom = conn.defineXML(spec.xml())
    dom.create()
    log.wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    log.wait_for(rf"KVMKIT-DISK vda {prefix}", timeout=BOOT_TIMEOUT)
    log.wait_for(r"KVMKIT-IP \d+\.\d+\.\d+\.\d+")
    assert log.wait_status(timeout=BOOT_TIMEOUT, cpus=1).mem_total_kb > 100_000
    mark = log.offset()
    dom.setVcpusFlags(2, libvirt.VIR_DOMAIN_AFFECT_LIVE)  # ACPI CPU hot-plug; /init onlines it
    log.wait_status(timeout=BOOT_TIMEOUT, after=mark, cpus=2)
    dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    log.wait_for("KVMKIT-POWEROFF", timeout=BOOT_TIMEOUT)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while dom.isActive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not dom.isActive(), "the guest did not power off after the ACPI power button"
    assert "Kernel panic" not in log.text() and "Oops" not in log.text()


@pytest.mark.full
def test_micro_guest_with_minimal_kernel_boots_from_the_bzimage(conn, prefix, workdir, virt_type, built):
    """From the bzImage, 2 vCPUs, and the built-in virtio-balloon gives memory back."""
    _kernel, image = built
    name = f"{prefix}minimal-bz"
    log = SerialLog(workdir / f"{name}.serial.log")
    spec = MicroDomain(name=name, kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline,
                       serial_log=str(log.path), virt_type=virt_type, vcpus=2, memory_mib=384)
    dom = conn.defineXML(spec.xml())
    dom.create()
    log.wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    before = log.wait_status(timeout=BOOT_TIMEOUT, cpus=2)
    assert before.mem_total_kb > 300 * 1024
    # virtio-balloon is built in: inflating it lowers the guest's MemTotal
    mark = log.offset()
    dom.setMemoryFlags(256 * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        statuses = log.statuses(mark)
        if statuses and statuses[-1].mem_total_kb < before.mem_total_kb - 100 * 1024:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"guest MemTotal stayed near {before.mem_total_kb} kB after ballooning to 256 MiB")


@pytest.mark.full
def test_cli_image_build_micro_with_the_minimal_kernel(built):
    kernel, image = built
    cmd = [sys.executable, "-m", "kvmkit", "--json", "image", "build", "micro", "--kernel", "minimal"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["key"] == image.key and data["pvh_kernel"] == image.pvh_kernel
    assert data["kernel_version"] == image.kernel_version and kernel.key[:8] in data["kernel_version"]
    for bad in (["micro", "--kernel", "tiny"], ["debian-12", "--kernel", "minimal"]):
        err = subprocess.run([sys.executable, "-m", "kvmkit", "image", "build", *bad], capture_output=True, text=True,
                             timeout=60, check=False)
        assert err.returncode != 0 and "--kernel" in err.stderr and "hint:" in err.stderr, err.stderr
