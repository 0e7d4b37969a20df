"""Converting an imported guest with Debian's virt-v2v, in place on kvmkit's qcow2 copies of its disks.

virt-v2v does what a guest from another hypervisor needs before it boots on KVM: for Linux it rebuilds the
initramfs with the virtio drivers, fixes the boot loader and /etc/fstab device names and removes VMware or
VirtualBox tools; for Windows it installs the virtio drivers (from ``VIRTIO_WIN``, the virtio-win ISO:
Debian ships none) and removes the tools. kvmkit has already checked and converted the disks into the pool,
so ``virt-v2v-in-place -i libvirtxml`` works on those volumes (a small domain XML written with lxml names
them): no second copy, and virt-v2v never reads the untrusted package itself.

It needs ``nbdkit`` and ``nbdcopy`` besides virt-v2v (Debian's package does not depend on them) and a
boot loader in the guest (a disk with a kernel in /boot and no boot loader is refused: "no bootloader
detected"; kvmkit's own path boots such a guest's kernel directly).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from kvmkit.errors import HostError, OperationFailed
from kvmkit.service.v2v.inspect import guestfs_env

TIMEOUT = 4 * 3600
_PROGRESS = re.compile(r"^\s*(\d+)/(\d+)\s*$")
_STAGE = re.compile(r"^\[\s*[\d.]+\]\s*(.+)$")


def available() -> str | None:
    """None when virt-v2v can run here, else what is missing."""
    missing = [tool for tool in ("virt-v2v-in-place", "nbdkit", "nbdcopy") if shutil.which(tool) is None]
    return ", ".join(missing) or None


def domain_xml(name: str, disks: list[str], *, memory_mib: int, vcpus: int, firmware: str) -> str:
    """The minimal libvirt XML virt-v2v's ``-i libvirtxml`` reads: the guest's disks as SATA disks."""
    root = etree.Element("domain", type="kvm")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "memory", unit="MiB").text = str(memory_mib)
    etree.SubElement(root, "vcpu").text = str(vcpus)
    os_el = etree.SubElement(root, "os", **({"firmware": "efi"} if firmware == "uefi" else {}))
    etree.SubElement(os_el, "type").text = "hvm"
    features = etree.SubElement(root, "features")
    for feature in ("acpi", "apic"):
        etree.SubElement(features, feature)
    devices = etree.SubElement(root, "devices")
    for i, path in enumerate(disks):
        disk = etree.SubElement(devices, "disk", type="file", device="disk")
        etree.SubElement(disk, "driver", name="qemu", type="qcow2")
        etree.SubElement(disk, "source", file=path)
        etree.SubElement(disk, "target", dev="sd" + chr(ord("a") + i), bus="sata")
    return etree.tostring(root, encoding="unicode")


def convert_in_place(name: str, disks: list[str], *, memory_mib: int, vcpus: int, firmware: str,
                     virtio_win: str | None = None, progress: Callable[[str, float | None], None] | None = None
                     ) -> list[str]:
    """Run virt-v2v-in-place over ``disks``; returns its status messages. OperationFailed with its error."""
    missing = available()
    if missing:
        raise HostError(f"virt-v2v cannot run here: {missing} not installed",
                        hint="apt-get install virt-v2v nbdkit libnbd-bin (scripts/packages.txt), or --via kvmkit")
    env = guestfs_env()
    if virtio_win:
        env["VIRTIO_WIN"] = virtio_win
    with tempfile.TemporaryDirectory(prefix="kvmkit-v2v-") as tmp:
        xml = Path(tmp) / f"{name}.xml"
        xml.write_text(domain_xml(name, disks, memory_mib=memory_mib, vcpus=vcpus, firmware=firmware))
        env["VIRT_V2V_TMPDIR"] = tmp
        cmd = ["virt-v2v-in-place", "-i", "libvirtxml", str(xml), "--root", "first", "--machine-readable"]
        errfile = (Path(tmp) / "stderr").open("w+")
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errfile, stdin=subprocess.DEVNULL,
                                    env=env, text=True)
        except FileNotFoundError as err:
            raise HostError("virt-v2v-in-place not found", hint="apt-get install virt-v2v") from err
        messages: list[str] = []
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip()
                m = _PROGRESS.match(line)
                if m:
                    if progress and int(m.group(2)):
                        progress("", 100.0 * int(m.group(1)) / int(m.group(2)))
                    continue
                if line:
                    messages.append(line)
                    stage = _STAGE.match(line)
                    if progress and stage:
                        progress(stage.group(1)[:200], None)
            rc = proc.wait(timeout=TIMEOUT)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            errfile.seek(0)
            errors = errfile.read()
            errfile.close()
    if rc != 0:
        lines = [x for x in errors.splitlines() if x.strip()]
        error = next((x for x in lines if "error:" in x), lines[-1] if lines else f"exit status {rc}")
        error = error.split("error:", 1)[-1].strip()
        hint = ("the guest has no boot loader virt-v2v can fix: import with --via kvmkit (kvmkit then boots its "
                "kernel directly)" if "bootloader" in error else
                "see virt-v2v's message; `--via kvmkit` imports without converting the guest")
        raise OperationFailed(f"virt-v2v could not convert the guest: {error}", hint=hint)
    return messages + [x for x in errors.splitlines() if "warning" in x]


def warnings_of(lines: list[str]) -> list[str]:
    """virt-v2v's warnings in ``lines`` (convert_in_place's messages), once each and readable: with
    --machine-readable it writes each warning twice, as a JSON message on stdout and as its own wrapped line
    on stderr; the JSON's text is taken, and raw JSON never reaches the import's notes."""
    found: list[str] = []
    for line in lines:
        if not line.lstrip().startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("type") == "warning" and msg.get("message"):
            found.append(f"virt-v2v warning: {msg['message']}")
    if found:
        return list(dict.fromkeys(found))
    return [x for x in lines if "warning" in x.lower() and not x.lstrip().startswith(("{", '"'))]
