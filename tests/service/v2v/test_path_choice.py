"""Which path ``vm import --via auto`` takes for the guest that inspection found (service/v2v/importer.py):
virt-v2v-in-place for a guest it knows how to convert (Windows; Linux with a boot loader, whose initramfs
and boot configuration it rewrites for virtio) when its tools are installed, kvmkit's own path otherwise.
The tools are looked up on this machine (scripts/packages.txt: virt-v2v, nbdkit, libnbd-bin)."""

from __future__ import annotations

import pytest

from kvmkit.service.v2v.importer import _choose_path
from kvmkit.service.v2v.inspect import GuestInfo
from kvmkit.service.v2v.virtv2v import available

pytestmark = pytest.mark.fast


def test_auto_takes_virt_v2v_for_the_guests_it_converts() -> None:
    assert available() is None, f"virt-v2v's tools are missing here: {available()} (scripts/packages.txt lists them)"
    windows = GuestInfo(found=True, os_type="windows", distro="windows", major=10)
    grub_linux = GuestInfo(found=True, os_type="linux", distro="debian", bootloader="grub2")
    assert _choose_path("auto", windows) == "virt-v2v"
    assert _choose_path("auto", grub_linux) == "virt-v2v"


def test_auto_takes_kvmkits_path_for_guests_virt_v2v_cannot_convert() -> None:
    kernel_only = GuestInfo(found=True, os_type="linux", distro="debian", kernel="/boot/vmlinuz-6.1")  # no loader
    nothing = GuestInfo(found=False)
    assert _choose_path("auto", kernel_only) == "kvmkit"
    assert _choose_path("auto", nothing) == "kvmkit"


def test_an_explicit_path_is_taken_as_given() -> None:
    guest = GuestInfo(found=True, os_type="windows")
    assert _choose_path("kvmkit", guest) == "kvmkit"
    assert _choose_path("virt-v2v", GuestInfo(found=False)) == "virt-v2v"
