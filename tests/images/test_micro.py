"""The micro-guest builds, is cached, and really boots on qemu:///system (tier 2)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kvmkit.images import micro


@pytest.mark.fast
def test_module_order_puts_dependencies_first(micro_image):
    from kvmkit.images.debian_kernel import fetch_kernel

    order = [p.name for p in micro.module_load_order(fetch_kernel().modules, ["virtio_net"])]
    assert order.index("failover.ko") < order.index("net_failover.ko") < order.index("virtio_net.ko")
    assert order.index("virtio.ko") < order.index("virtio_net.ko")


@pytest.mark.fast
def test_build_is_cached_and_copies_to_out(micro_image, tmp_path):
    cached = Path(micro_image.kernel).parent
    before = _identity(cached)
    again = micro.build(tmp_path / "out")
    assert _identity(cached) == before, "a cached build must not rebuild (the cache's files were rewritten)"
    assert again.key == micro_image.key
    initrd = (tmp_path / "out" / "initrd.img").read_bytes()
    assert initrd.startswith(b"070701"), "an uncompressed newc cpio archive (no in-guest inflate)"
    assert (tmp_path / "out" / "vmlinuz").stat().st_size > 1_000_000


@pytest.mark.fast
def test_every_input_is_in_the_cache_key(micro_image, monkeypatch):
    """What the cached entry records (kernel, modules, init scripts, busybox, command line, format) keys it."""
    from kvmkit.images.debian_kernel import fetch_kernel

    kernel = fetch_kernel()
    key = micro._input_key(kernel)
    assert key == micro_image.key
    for name, value in (("DEFAULT_CMDLINE", "console=ttyS0"), ("FORMAT_VERSION", -1),
                        ("GUEST_MODULES", ["virtio_net"])):
        with monkeypatch.context() as m:
            m.setattr(micro, name, value)
            assert micro._input_key(kernel) != key, name


def _identity(cached: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of a cache entry: a rebuild publishes new files, a reuse touches none."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(cached.iterdir())}


@pytest.mark.guest
def test_micro_guest_boots_and_reports_status(micro_guest):
    guest = micro_guest("boot")
    guest.log.wait_for("KVMKIT-GUEST-READY")
    status = guest.log.wait_status(cpus=1)
    assert status.mem_total_kb > 100_000


@pytest.mark.guest
def test_micro_guest_powers_off_on_acpi_button(micro_guest):
    import libvirt

    guest = micro_guest("acpi")
    guest.log.wait_for("KVMKIT-STATUS")
    guest.dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
    deadline = time.monotonic() + 120  # a guard: the guest answers in well under a second when idle
    while guest.dom.isActive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not guest.dom.isActive(), "the guest ignored the ACPI power button"
    assert "KVMKIT-POWEROFF" in guest.log.text()
