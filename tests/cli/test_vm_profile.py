"""`kvmkit vm create --profile fast-boot` as a user runs it: the real CLI, real libvirt, a real micro-guest."""

from __future__ import annotations

import json
import subprocess
import time

import libvirt
import pytest

from kvmkit.xml.domain import apply_spec, spec_to_xml, xml_to_spec
from kvmkit.xml.util import parse
from tests.support.cli_run import kvmkit, leftovers
from tests.support.serial import SerialLog


@pytest.mark.guest
def test_fast_boot_micro_guest_boots_lean_and_shuts_down_gracefully(conn, prefix, micro_image):
    name = f"{prefix}fb"
    out = json.loads(kvmkit("--json", "vm", "create", name, "--micro", "--profile", "fast-boot", "--start",
                            "--network", "none").stdout)
    assert out["started"] is True and out["profile"] == "fast-boot"
    log = SerialLog(out["serial_log"])
    log.wait_for("KVMKIT-GUEST-READY")

    dom = conn.lookupByName(name)
    root = parse(dom.XMLDesc(0))  # the live XML: what QEMU really got, after libvirt added its defaults
    assert "q35" in root.find("os/type").get("machine") and root.find("os/loader") is None
    assert root.findtext("os/kernel") == micro_image.pvh_kernel, "the micro-guest boots its PVH vmlinux"
    assert [c.get("model") for c in root.iterfind("devices/controller[@type='usb']")] == ["none"]
    assert root.find("devices/memballoon").get("model") == "none"
    for absent in ("rng", "channel", "graphics", "video"):
        assert root.find(f"devices/{absent}") is None, f"{absent} in a fast-boot domain"
    assert root.find("features/acpi") is not None and root.find("devices/serial") is not None
    assert "cryptomgr.notests" in root.findtext("os/cmdline").split()

    info = json.loads(kvmkit("--json", "vm", "show", name).stdout)
    assert info["profile"] == "fast-boot" and info["balloon"] is False and info["rng"] is False
    assert info["metadata"]["boot_kernel"].startswith("pvh")
    assert "profile     fast-boot" in kvmkit("vm", "show", name).stdout

    # round trip: the defined XML read back is the same spec, and writing it back changes nothing
    config = dom.XMLDesc(0x2)  # VIR_DOMAIN_XML_INACTIVE
    spec = xml_to_spec(config)
    assert spec.profile == "fast-boot" and not spec.usb and not spec.balloon and not spec.rng
    assert not spec.guest_agent and spec.kernel == micro_image.pvh_kernel
    assert xml_to_spec(spec_to_xml(spec)).model_dump() == spec.model_dump()
    assert xml_to_spec(apply_spec(config, spec)).model_dump() == spec.model_dump()

    # graceful shutdown: the ACPI power button reaches the guest's acpid (no --force), which runs once the
    # first status line is out (the ready marker comes before it: a press then would be lost)
    log.wait_for("KVMKIT-STATUS")
    res = kvmkit("--json", "vm", "shutdown", name, "--timeout", "60")
    assert dom.info()[0] == 5, res.stdout  # VIR_DOMAIN_SHUTOFF
    assert "KVMKIT-POWEROFF" in log.text(), "the guest powered itself off on the power button"


@pytest.mark.fast
@pytest.mark.parametrize("extra, match", [
    (["--firmware", "uefi"], "cannot use UEFI firmware"),
    (["--profile", "turbo"], "invalid --profile"),
    (["--metadata", "profile=slow"], "not a profile"),
])
def test_bad_combinations_give_one_error_and_leave_nothing(conn, prefix, extra, match):
    name = f"{prefix}bad"
    args = ["vm", "create", name, "--micro", "--disk", "size=16M", "--start", *extra]
    if "--profile" not in extra:
        args += ["--profile", "fast-boot"]
    res = kvmkit(*args, check=False)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines[0].startswith("error: ") and match in lines[0], res.stderr
    assert len([ln for ln in lines if ln.startswith("error: ")]) == 1 and "Traceback" not in res.stderr
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
def test_explicit_flags_win_and_print_xml_shows_the_shape(prefix):
    xml = kvmkit("vm", "create", f"{prefix}px", "--micro", "--profile", "fast-boot", "--machine", "pc",
                 "--network", "none", "--print-xml").stdout
    root = parse(xml)
    assert root.find("os/type").get("machine") == "pc", "--machine wins over the profile"
    assert root.find("devices/memballoon").get("model") == "none" and root.find("devices/rng") is None
    assert root.find(".//{https://kvmkit.dev/xmlns/vm/1}profile").text == "fast-boot"
    cmdline = root.findtext("os/cmdline")
    assert len(cmdline) > 80 and "\n" not in cmdline, "printed XML is never wrapped at the terminal width"
    assert all("\n" not in (el.text or "") for el in root.iter() if len(el) == 0)


@pytest.mark.guest
def test_fast_boot_guest_still_gets_its_network_and_hot_plugged_disks(conn, prefix, workdir):
    """The lean shape drops devices, not function: DHCP on a NIC, and a disk hot-plugged after boot."""
    name = f"{prefix}fbnet"
    out = json.loads(kvmkit("--json", "vm", "create", name, "--micro", "--profile", "fast-boot", "--start",
                            "--network", "network=default").stdout)
    log = SerialLog(out["serial_log"])
    log.wait_for(r"KVMKIT-IP \d+\.\d+\.\d+\.\d+")
    disk = workdir / "hot.raw"
    subprocess.run(["qemu-img", "create", "-f", "raw", str(disk), "16M"], check=True, capture_output=True)
    dom = conn.lookupByName(name)
    assert "vda" not in in_guest(conn, dom, log, "ls /sys/block", "KT-BLK0")
    kvmkit("vm", "disk", "attach", name, "--path", str(disk), "--format", "raw", "--live")
    deadline = time.monotonic() + 60
    while "vda" not in in_guest(conn, dom, log, "ls /sys/block", "KT-BLK1"):
        assert time.monotonic() < deadline, "the guest never saw the hot-plugged disk"
        time.sleep(1)


def in_guest(conn, dom, log: SerialLog, command: str, tag: str) -> str:
    """Type ``command`` on the guest's serial shell (libvirt's console stream); what it printed after ``tag``."""
    mark = log.offset()
    stream = conn.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    try:
        stream.send(f"\necho {tag}-$({command} | tr '\\n' ' ')-END\n".encode())
        return log.wait_for(rf"{tag}-([^$\n]*)-END", timeout=60, after=mark).group(1)
    finally:
        stream.abort()
