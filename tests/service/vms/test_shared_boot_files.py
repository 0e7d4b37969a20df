"""Kernels, initrds and ISOs many VMs share: no libvirt security record is left behind, none is refused.

libvirt's DAC driver records the owner of each file it gives to the QEMU user and counts the VMs using it
(trusted.libvirt.security.ref_dac); the last VM to stop gives the file back. Read-only media kvmkit
marks `<seclabel model='dac' relabel='no'/>` are never given away. Every VM here boots from private
copies of the micro-guest's files (the shared cache is other tests' to use).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from kvmkit.service.copies.backup import backup_vm
from kvmkit.service.copies.clone import clone_vm
from kvmkit.service.copies.restore import restore_vm
from kvmkit.service.copies.snapshots import create_snapshot, revert_snapshot
from kvmkit.service.vms import lifecycle
from kvmkit.service.vms.create import create_vm
from tests.support.boot_files import (
    BOOT_TIMEOUT,
    boot_once,
    describe,
    make_disk,
    owner,
    private_boot_files,
    records,
)
from tests.support.serial import SerialLog

REPO = Path(__file__).resolve().parents[3]
QEMU = (64055, 64055)  # libvirt-qemu, the DAC base label of this host's libvirt


def _spec(name: str, boot, workdir: Path, virt_type: str, iso: Path) -> dict:
    return {"name": name, "kernel": boot.kernel, "initrd": boot.initrd, "cmdline": boot.cmdline,
            "memory_mib": 256, "virt_type": virt_type, "serial_log": str(workdir / f"{name}.serial.log"),
            "balloon": False, "rng": False, "usb": False, "guest_agent": False,
            "disks": [{"path": make_disk(workdir, name), "format": "qcow2"}, {"device": "cdrom", "path": str(iso)}]}


@pytest.mark.guest
def test_vms_sharing_kernel_initrd_and_iso_through_kvmkit_operations_leave_no_records(
        conn, prefix, workdir, micro_image, virt_type):
    boot = private_boot_files(micro_image, workdir / "boot")
    iso = workdir / "boot" / "shared.iso"
    iso.write_bytes(b"\0" * 2048 * 64)
    iso.chmod(0o644)
    names = [f"{prefix}a", f"{prefix}b"]
    for name in names:
        create_vm(conn, _spec(name, boot, workdir, virt_type, iso), start=True)
        root = etree.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
        cdrom = root.find("devices/disk[@device='cdrom']/source")
        assert cdrom.get("file") == str(iso)
        assert [(s.get("model"), s.get("relabel")) for s in cdrom.iterfind("seclabel")] == [("dac", "no")]
    for name in names:
        SerialLog(workdir / f"{name}.serial.log").wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    assert {p: (o, r["ref_dac"]) for p, (o, r) in describe(boot.paths()).items()} == \
        {p: (QEMU, "2") for p in boot.paths()}
    assert owner(iso) == (0, 0) and records(iso) == {}, "the shared ISO was given to the QEMU user"

    a, b = names
    create_snapshot(conn, a, "s1")                       # internal, with memory
    assert revert_snapshot(conn, a, "s1")["state"] == "running"
    b_dom = conn.lookupByName(b)
    b_dom.suspend()
    try:
        clone_vm(conn, b, f"{prefix}c", linked=False)
    finally:
        b_dom.resume()
    lifecycle.start(conn, f"{prefix}c")
    backup_vm(conn, a, workdir / "backup")
    restore_vm(conn, workdir / "backup", name=f"{prefix}d")
    lifecycle.start(conn, f"{prefix}d")
    everyone = [*names, f"{prefix}c", f"{prefix}d"]
    for name in everyone[2:]:
        log = etree.fromstring(conn.lookupByName(name).XMLDesc(0).encode()).find("devices/serial/log").get("file")
        SerialLog(log).wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
    assert all(r["ref_dac"] == "4" for _o, r in describe(boot.paths()).values())
    assert owner(iso) == (0, 0) and records(iso) == {}

    for name in everyone:
        lifecycle.destroy(conn, name)
    assert describe(boot.paths()) == {p: ((0, 0), {}) for p in boot.paths()}
    assert owner(iso) == (0, 0) and records(iso) == {}
    boot_once(conn, f"{prefix}e", boot, workdir, virt_type)
    assert describe(boot.paths()) == {p: ((0, 0), {}) for p in boot.paths()}


@pytest.mark.guest
def test_fixture_teardown_stops_vms_before_their_disks_go(conn, prefix, workdir, micro_image, virt_type):
    """The operation that leaked: a test ended with its VM running; pytest removed the work directory (and
    the test pool's volumes) first and stopped the VM afterwards. libvirt's restore of that VM's labels
    then failed at the missing disk and never reached the kernel and initrd (ref_dac 1 left per VM, owner
    libvirt-qemu). Run such a test through the real fixtures, then boot from the same files."""
    boot = private_boot_files(micro_image, workdir / "boot")
    env = {**os.environ, "KVMKIT_PROBE_KERNEL": boot.kernel, "KVMKIT_PROBE_INITRD": boot.initrd}
    res = subprocess.run([sys.executable, "-m", "pytest", "tests/service/vms/teardown_probe.py", "-q",
                          "-p", "no:cacheprovider"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "1 passed" in res.stdout
    assert describe(boot.paths()) == {p: ((0, 0), {}) for p in boot.paths()}
    boot_once(conn, f"{prefix}after", boot, workdir, virt_type)
    assert describe(boot.paths()) == {p: ((0, 0), {}) for p in boot.paths()}
