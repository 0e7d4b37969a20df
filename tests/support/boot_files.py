"""Private copies of the micro-guest's boot files, and libvirt's security records on them.

Other tests boot VMs from the shared micro-guest cache at the same time, so a test about libvirt's
records never looks at (or leaves records on) the cache: it copies the kernel and initrd into its own
work directory and boots its VMs from there.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import libvirt

from kvmkit.images.plain_copy import copy_file
from tests.support.micro_domain import MicroDomain
from tests.support.serial import SerialLog

ATTR_PREFIX = "trusted.libvirt.security."
BOOT_TIMEOUT = 90


@dataclass
class BootFiles:
    kernel: str
    initrd: str
    cmdline: str

    def paths(self) -> list[str]:
        return [self.kernel, self.initrd]


def private_boot_files(micro_image, directory: Path) -> BootFiles:
    """The micro-guest's bzImage kernel and initrd copied (without attributes) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    kernel = copy_file(micro_image.kernel, directory / "vmlinuz", metadata=False)
    initrd = copy_file(micro_image.initrd, directory / "initrd.img", metadata=False)
    for p in (kernel, initrd):
        p.chmod(0o644)
    return BootFiles(str(kernel), str(initrd), micro_image.cmdline)


def records(path: str | Path) -> dict[str, str]:
    """libvirt's security attributes on ``path``, without the ``trusted.libvirt.security.`` prefix."""
    return {a.removeprefix(ATTR_PREFIX): os.getxattr(path, a).decode()
            for a in os.listxattr(path) if a.startswith(ATTR_PREFIX)}


def owner(path: str | Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def describe(paths: list[str]) -> dict[str, tuple[tuple[int, int], dict[str, str]]]:
    return {p: (owner(p), records(p)) for p in paths}


def make_disk(directory: Path, name: str) -> str:
    path = directory / f"{name}.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "16M"], check=True)
    return str(path)


def define(conn: libvirt.virConnect, name: str, boot: BootFiles, log_dir: Path, virt_type: str,
           **kwargs) -> tuple[libvirt.virDomain, SerialLog]:
    log = log_dir / f"{name}.serial.log"
    spec = MicroDomain(name=name, kernel=boot.kernel, initrd=boot.initrd, cmdline=boot.cmdline,
                       serial_log=str(log), virt_type=virt_type, **kwargs)
    return conn.defineXML(spec.xml()), SerialLog(log)


def leak_records(conn: libvirt.virConnect, name: str, boot: BootFiles, directory: Path, virt_type: str) -> None:
    """Leave real stale records on ``boot``'s files the way the test suite used to: a VM booted from them is
    stopped after its disk file was deleted. libvirt's restore then stops at the missing disk and never
    reaches the kernel and initrd (ref_dac stays 1, owner stays the QEMU user)."""
    disk = make_disk(directory, name)
    dom, _log = define(conn, name, boot, directory, virt_type, disks=[{"path": disk, "format": "qcow2"}])
    try:
        dom.create()
        os.unlink(disk)
        dom.destroy()
    finally:
        dom.undefine()
    for path in boot.paths():
        assert records(path).get("ref_dac") == "1", (path, records(path))


def boot_once(conn: libvirt.virConnect, name: str, boot: BootFiles, directory: Path, virt_type: str) -> None:
    """Define and start a VM from ``boot``, wait for its ready marker, destroy and undefine it."""
    dom, log = define(conn, name, boot, directory, virt_type)
    try:
        dom.create()
        log.wait_for("KVMKIT-GUEST-READY", timeout=BOOT_TIMEOUT)
        dom.destroy()
    finally:
        if dom.isActive():
            dom.destroy()
        dom.undefine()
