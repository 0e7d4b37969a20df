"""spec/profiles.py: the fast-boot profile's shape, its precedence rules, its kernel arguments and round trips."""

from __future__ import annotations

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.spec.profiles import FAST_BOOT_ARGS, I8042_ARGS, with_args
from kvmkit.spec.vm import parse_spec
from kvmkit.xml.domain import apply_spec, spec_to_xml, validate_with_schema, xml_to_spec
from kvmkit.xml.util import parse

pytestmark = pytest.mark.fast

KERNEL = {"kernel": "/boot/vmlinuz", "initrd": "/boot/initrd.img", "cmdline": "console=ttyS0 quiet"}


def fast(**data):
    return parse_spec({"name": "vm1", "virt_type": "qemu", "profile": "fast-boot", **data})


def test_fast_boot_sets_the_lean_shape_and_remembers_itself():
    spec = fast()
    assert spec.machine == "q35" and spec.firmware == "bios"
    assert (spec.usb, spec.balloon, spec.rng, spec.guest_agent) == (False, False, False, False)
    assert spec.serial and spec.graphics is None
    assert spec.metadata == {"profile": "fast-boot"}
    assert spec.cmdline is None, "no kernel, no kernel arguments"


def test_without_a_profile_nothing_changes():
    spec = parse_spec({"name": "vm1", **KERNEL})
    assert spec.profile is None and spec.machine is None and spec.usb and spec.balloon and spec.rng
    assert spec.cmdline == KERNEL["cmdline"] and spec.metadata == {}


def test_direct_kernel_boot_gets_the_extra_arguments_once():
    spec = fast(**KERNEL)
    assert spec.cmdline == "console=ttyS0 quiet " + " ".join(FAST_BOOT_ARGS)
    again = spec.updated()  # what create does after resolve: validate the filled-in spec again
    assert again.cmdline == spec.cmdline and again == spec


def test_the_callers_kernel_arguments_win():
    spec = fast(**{**KERNEL, "cmdline": "console=ttyS0 cryptomgr.notests=0 i8042.nopnp=0"})
    words = spec.cmdline.split()
    assert "cryptomgr.notests=0" in words and "cryptomgr.notests" not in words
    assert "i8042.nopnp=0" in words and "i8042.nopnp" not in words
    assert with_args(None, ("a=1", "b")) == "a=1 b" and with_args("a=2", ("a=1",)) == "a=2"


def test_graphics_keep_the_keyboard():
    spec = fast(**KERNEL, graphics={"type": "vnc"})
    assert spec.graphics is not None
    assert not set(I8042_ARGS) & set(spec.cmdline.split()), "a VNC user needs the PS/2 keyboard"
    assert "cryptomgr.notests" in spec.cmdline.split()


def test_explicit_values_win_over_the_profile():
    spec = fast(machine="pc", balloon=True, rng=True, usb=True, guest_agent=True)
    assert spec.machine == "pc" and spec.balloon and spec.rng and spec.usb and spec.guest_agent
    assert spec.profile == "fast-boot"


def test_uefi_is_refused_with_one_clear_line():
    with pytest.raises(InvalidInput) as err:
        fast(firmware="uefi")
    assert "fast-boot" in err.value.message and "UEFI" in err.value.message and "\n" not in err.value.message
    assert "--firmware uefi" in err.value.message and err.value.hint


@pytest.mark.parametrize("data, match", [
    ({"profile": "slow-boot"}, "invalid profile"),
    ({"profile": "fast-boot", "metadata": {"profile": "other"}}, "not a profile"),
    ({"metadata": {"profile": "nope"}}, "not a profile"),
])
def test_bad_profiles(data, match):
    with pytest.raises(InvalidInput) as err:
        parse_spec({"name": "vm1", **data})
    assert match in str(err.value) and "\n" not in err.value.message


def test_the_profile_comes_back_from_metadata():
    spec = parse_spec({"name": "vm1", "metadata": {"profile": "fast-boot", "owner": "me"}})
    assert spec.profile == "fast-boot" and spec.machine == "q35" and not spec.balloon
    assert spec.metadata == {"profile": "fast-boot", "owner": "me"}


def test_domain_xml_is_lean_valid_and_round_trips():
    spec = fast(**KERNEL, memory_mib=256, nics=[{"type": "network", "source": "default", "mac": "52:54:00:aa:bb:01"}])
    xml = spec_to_xml(spec)
    assert validate_with_schema(xml) == []
    root = parse(xml)
    assert root.find("os/type").get("machine") == "q35" and root.find("os").get("firmware") is None
    assert [c.get("model") for c in root.iterfind("devices/controller[@type='usb']")] == ["none"]
    assert root.find("devices/memballoon").get("model") == "none"
    for absent in ("rng", "channel", "graphics", "video"):
        assert root.find(f"devices/{absent}") is None, absent
    assert root.find("features/acpi") is not None and root.find("features/apic") is not None
    assert root.find("devices/serial") is not None and root.find("devices/console") is not None
    back = xml_to_spec(xml)
    assert back.model_dump() == spec.model_dump()
    assert apply_spec(xml, back) == xml, "nothing to rewrite"


def test_usb_off_without_a_profile_round_trips():
    spec = parse_spec({"name": "vm1", "virt_type": "qemu", "usb": False})
    xml = spec_to_xml(spec)
    assert xml_to_spec(xml).usb is False and validate_with_schema(xml) == []
    on = apply_spec(xml, spec.updated(usb=True))
    assert parse(on).find("devices/controller[@type='usb']") is None, "libvirt adds its default controller"


def test_test_driver_accepts_the_lean_domain(test_conn, prefix):
    spec = fast(**KERNEL, name=f"{prefix}fb", memory_mib=128)
    dom = test_conn.defineXML(spec_to_xml(spec))
    try:
        back = xml_to_spec(dom.XMLDesc(0))
        assert back.profile == "fast-boot" and not back.usb and not back.balloon and not back.rng
        assert back.cmdline == spec.cmdline
    finally:
        dom.undefine()
