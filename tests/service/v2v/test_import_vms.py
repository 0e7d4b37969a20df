"""``kvmkit vm import`` on qemu:///system with real qemu-img, libguestfs and virt-v2v.

- a plain disk with no OS imports through kvmkit's own path: SATA/e1000e, a warning, and how to switch later;
- a failure after the disks were converted (virt-v2v refusing a disk with no OS) leaves nothing behind;
- (full) the debian-12 image has no boot loader (one ext4 file system, booted by its kernel in kvmkit): the
  import finds that, takes kvmkit's own path (virt-v2v would refuse it: "no bootloader detected") and boots
  the guest's own kernel from /boot directly;
- (full) a UEFI copy of it with GRUB on an EFI system partition (uefi_guest.py), converted to a
  streamOptimized VMDK and packed with a VMware-style OVF into an OVA, is converted by virt-v2v-in-place,
  and boots through OVMF and its own GRUB to a login prompt, its NIC on the default network with a lease.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvmkit.images import debian
from kvmkit.service.net.networks import leases
from tests.service.v2v.packages import manifest, ovf_xml, write_ova
from tests.service.v2v.uefi_guest import uefi_disk
from tests.support.cli_run import leftovers
from tests.support.serial import SerialLog

KVMKIT = str(Path(sys.executable).parent / "kvmkit")


def kvmkit(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """The real CLI; imports launch libguestfs appliances under TCG on a shared host: minutes, never assumed."""
    env = {**os.environ, "KVMKIT_CONNECT": "qemu:///system"}
    return subprocess.run([KVMKIT, *args], capture_output=True, text=True, env=env, timeout=timeout)


def pool_files(prefix: str) -> list[str]:
    return sorted(p.name for p in Path("/var/lib/libvirt/images").glob(f"{prefix}*"))


@pytest.mark.guest
@pytest.mark.timeout(3600)
def test_a_disk_without_an_os_imports_with_sata_e1000e(conn, prefix, workdir) -> None:
    disk = workdir / "blank.vhd"
    raw = workdir / "blank.raw"
    with raw.open("wb") as fh:
        fh.truncate(64 * 1024**2)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vpc", str(raw), str(disk)], check=True)
    raw.unlink()
    res = kvmkit("--json", "vm", "import", str(disk), "--name", f"{prefix}blank")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["path"] == "kvmkit" and out["kind"] == "disk" and out["defined"] and out["state"] == "shut-off"
    assert out["disks"][0]["format"] == "vpc" and out["disks"][0]["volume"] == f"{prefix}blank-disk0.qcow2"
    assert out["guest"]["found"] is False
    assert "no operating system found on the disks" in out["warnings"]
    assert any(n.startswith("disk bus sata, NIC model e1000e") for n in out["notes"])
    assert any("kvmkit vm disk attach" in n and "--bus virtio" in n for n in out["notes"])
    shown = json.loads(kvmkit("--json", "vm", "show", f"{prefix}blank").stdout)
    assert [(d["bus"], d["format"]) for d in shown["disks"]] == [("sata", "qcow2")]
    assert [n["model"] for n in shown["nics"]] == ["e1000e"]
    assert shown["metadata"]["import_path"] == "kvmkit"


@pytest.mark.guest
@pytest.mark.timeout(3600)
def test_a_failure_after_conversion_leaves_nothing_behind(conn, prefix, workdir) -> None:
    disk = workdir / "blank.vdi"
    subprocess.run(["qemu-img", "create", "-f", "vdi", str(disk), "64M"], check=True, capture_output=True)
    res = kvmkit("vm", "import", str(disk), "--name", f"{prefix}v2v", "--via", "virt-v2v")
    assert res.returncode == 1, res.stdout
    assert "error: virt-v2v could not convert the guest" in res.stderr, res.stderr
    assert "hint:" in res.stderr
    assert leftovers(conn, prefix) == [] and pool_files(prefix) == []


@pytest.fixture(scope="module")
def debian_image() -> dict[str, str]:
    return debian.build(None)  # cached under /var/lib/kvmkit/cache/debian-12 (built once, ~10 min)


@pytest.mark.full
@pytest.mark.timeout(3600)
def test_debian12_without_a_boot_loader_imports_to_boot_its_own_kernel(conn, prefix, debian_image) -> None:
    name = f"{prefix}plain"
    res = kvmkit("--json", "vm", "import", debian_image["path"], "--name", name)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert (out["kind"], out["path"], out["boot"], out["started"]) == ("disk", "kvmkit", "kernel", False)
    assert out["guest"]["distro"] == "debian" and out["guest"]["bootloader"] is None
    assert out["disks"][0]["format"] == "qcow2"  # read from the header
    assert any("no boot loader" in n for n in out["notes"])
    shown = json.loads(kvmkit("--json", "vm", "show", name).stdout)
    assert [(d["bus"], d["format"]) for d in shown["disks"]] == [("virtio", "qcow2")]
    assert shown["kernel"] == f"/var/lib/libvirt/images/{name}-vmlinuz"
    assert Path(shown["kernel"]).stat().st_size > 0 and Path(f"/var/lib/libvirt/images/{name}-initrd.img").exists()
    assert "root=UUID=" in shown["cmdline"] and "console=ttyS0" in shown["cmdline"]
    assert shown["metadata"]["import_path"] == "kvmkit"


@pytest.mark.full
@pytest.mark.timeout(5400)
def test_debian12_uefi_ova_from_vmware_is_converted_by_virt_v2v_and_boots_to_login(conn, prefix, workdir,
                                                                                  debian_image) -> None:
    vmdk = workdir / f"{prefix}disk1.vmdk"
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "vmdk", "-o", "subformat=streamOptimized",
                    str(uefi_disk(debian_image)), str(vmdk)], check=True, capture_output=True)
    virtual = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-f", "vmdk", str(vmdk)],
                                        capture_output=True, text=True, check=True).stdout)["virtual-size"]
    ovf = ovf_xml(f"{prefix}web", [(vmdk.name, virtual)], vcpus=1, memory_mib=1024, nics=1, firmware="efi")
    ova = write_ova(workdir / "web.ova", [("web.ovf", ovf), ("web.mf", manifest({"web.ovf": ovf, vmdk.name: vmdk})),
                                          (vmdk.name, vmdk)])
    vmdk.unlink()
    name = f"{prefix}web"
    res = kvmkit("--json", "vm", "import", str(ova), "--start")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["name"] == name  # the OVF's VirtualSystem name
    assert (out["kind"], out["manifest"], out["path"], out["boot"]) == ("ova", "checked", "virt-v2v", "firmware")
    assert out["guest"]["distro"] == "debian" and out["guest"]["major"] == 12
    assert (out["guest"]["bootloader"], out["guest"]["firmware"]) == ("grub", "uefi")
    assert out["os"]["short_id"] == "debian12"
    assert out["disks"][0]["format"] == "vmdk" and out["started"]

    shown = json.loads(kvmkit("--json", "vm", "show", name).stdout)
    assert [(d["bus"], d["format"]) for d in shown["disks"]] == [("virtio", "qcow2")]
    assert [n["model"] for n in shown["nics"]] == ["virtio"] and shown["nics"][0]["source"] == "default"
    assert (shown["vcpus"], shown["memory_mib"]) == (1, 1024)  # the OVF's
    assert shown["firmware"] == "uefi" and not shown.get("kernel")  # its own boot loader, not kvmkit's kernel
    assert shown["metadata"]["import_path"] == "virt-v2v"

    log = SerialLog(shown["serial_log"])
    log.wait_for(r"GNU GRUB|Booting `Debian", timeout=3000)  # GRUB drew its menu on the serial console
    log.wait_for(r"login:", timeout=3000)
    mac = shown["nics"][0]["mac"]
    deadline = time.monotonic() + 600
    while not leases(conn, "default", mac):
        assert time.monotonic() < deadline, f"no DHCP lease for {mac} on the default network"
        time.sleep(2)
    lease = leases(conn, "default", mac)[0]
    assert lease["type"] == "ipv4" and lease["ip"].startswith("192.168.122.")
