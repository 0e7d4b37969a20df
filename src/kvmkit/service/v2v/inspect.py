"""Inspecting an imported guest's disks with libguestfs: OS, firmware, boot loader, virtio drivers, kernel.

One libguestfs appliance per inspection: ``guestfish --listen --ro`` starts it, each question is a
``guestfish --remote`` call (a failing question, prefixed with '-', does not stop the server), ``exit``
ends it. The disks are kvmkit's own qcow2 copies (checked and converted first), opened read-only.

libguestfs runs here with ``LIBGUESTFS_BACKEND=direct`` (QEMU started by libguestfs itself, not through
libvirt) and, where KVM does not really work (kvmkit.host.virt_type), ``LIBGUESTFS_BACKEND_SETTINGS=
force_tcg``: the appliance would otherwise try KVM and abort. It needs a host kernel package (supermin
builds the appliance from the host's kernel and packages: Debian's libguestfs-tools + linux-image-amd64).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kvmkit.errors import HostError, OperationFailed

ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT_GUID = "21686148-6449-6E6F-744E-656564454649"
LAUNCH_TIMEOUT = 1800   # the appliance boots under TCG on a loaded host: minutes, never assumed short
CALL_TIMEOUT = 600
BOOTLOADERS = [("/boot/grub/grub.cfg", "grub"), ("/boot/grub2/grub.cfg", "grub2"), ("/boot/efi/EFI", "uefi"),
               ("/boot/loader/entries", "systemd-boot"), ("/boot/extlinux/extlinux.conf", "extlinux"),
               ("/boot/syslinux/syslinux.cfg", "syslinux"), ("/boot/extlinux.conf", "extlinux")]


def guestfs_env() -> dict[str, str]:
    """The environment libguestfs tools run with here (see the module docstring)."""
    from kvmkit.host.virt_type import choose_virt_type

    env = {**os.environ, "LIBGUESTFS_BACKEND": "direct"}
    if choose_virt_type()[0] != "kvm":
        env["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    return env


@dataclass
class GuestInfo:
    found: bool = False
    root: str | None = None
    os_type: str | None = None        # linux, windows, freebsd ...
    distro: str | None = None
    product: str | None = None
    major: int | None = None
    minor: int | None = None
    osinfo: str | None = None         # libguestfs's osinfo short id (debian12, win10 ...)
    arch: str | None = None
    hostname: str | None = None
    firmware: str | None = None       # uefi | bios | None (no partition table: cannot tell)
    bootloader: str | None = None
    virtio_block: bool = False
    virtio_net: bool = False
    kernel: str | None = None         # guest path of the newest kernel in /boot
    initrd: str | None = None
    kernel_file: str | None = None    # host copies (when asked for)
    initrd_file: str | None = None
    root_uuid: str | None = None
    cmdline: str | None = None        # /etc/kernel/cmdline when the guest has one
    fstab_sd: bool = False            # /etc/fstab names /dev/sdX or /dev/hdX (renamed under virtio)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if k not in ("notes",)}


class Guestfish:
    """A read-only libguestfs appliance over ``disks`` (all qcow2)."""

    def __init__(self, disks: list[str], fmt: str = "qcow2") -> None:
        self.env = guestfs_env()
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (the server's stderr while it lives; closed in close())
        args = ["guestfish", "--listen", "--ro", f"--format={fmt}"]
        for disk in disks:
            args += ["-a", disk]
        try:
            res = subprocess.run(args, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL,
                                 env=self.env, text=True, timeout=CALL_TIMEOUT, check=False)
        except FileNotFoundError as err:
            raise HostError("guestfish not found", hint="apt-get install libguestfs-tools linux-image-amd64") from err
        m = re.search(r"GUESTFISH_PID=(\d+)", res.stdout)
        if res.returncode != 0 or not m:
            raise OperationFailed(f"libguestfs did not start: {self._log_tail() or res.stdout.strip()}",
                                  hint="check `libguestfs-test-tool` (LIBGUESTFS_BACKEND=direct)")
        self.pid = int(m.group(1))

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace").strip()[-600:]

    def __call__(self, *words: str, may_fail: bool = False, timeout: float = CALL_TIMEOUT) -> list[str]:
        command = ("-" if may_fail else "") + words[0]
        res = subprocess.run(["guestfish", f"--remote={self.pid}", "--", command, *words[1:]],
                             capture_output=True, text=True, env=self.env, timeout=timeout, check=False)
        if res.returncode != 0 and not may_fail:
            raise OperationFailed(f"libguestfs {words[0]} failed: {(res.stderr or self._log_tail()).strip()[-400:]}")
        return [line for line in res.stdout.splitlines() if line.strip()]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(["guestfish", f"--remote={self.pid}", "--", "exit"], capture_output=True, env=self.env,
                           timeout=60, check=False)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGTERM)  # our own server, if it is still there
        self.log.close()


def inspect_guest(disks: list[str], boot_dir: str | None = None) -> GuestInfo:
    """What the guest on ``disks`` is; with ``boot_dir``, a Linux guest's newest kernel and initrd are copied
    there too (``vmlinuz``, ``initrd.img``) for booting it directly when it has no boot loader."""
    g = Guestfish(disks)
    try:
        g("run", timeout=LAUNCH_TIMEOUT)
        info = GuestInfo()
        roots = g("inspect-os")
        info.firmware = _firmware(g)
        if not roots:
            info.notes.append("libguestfs found no operating system on the disks")
            return info
        root = info.root = roots[0]
        if len(roots) > 1:
            info.notes.append(f"{len(roots)} operating systems found; using the one on {root}")
        info.found = True

        def one(cmd: str) -> str | None:
            out = g(cmd, root, may_fail=True)
            return out[0] if out and out[0] != "unknown" else None

        info.os_type, info.distro, info.product = one("inspect-get-type"), one("inspect-get-distro"), \
            one("inspect-get-product-name")
        info.osinfo, info.arch, info.hostname = one("inspect-get-osinfo"), one("inspect-get-arch"), \
            one("inspect-get-hostname")
        for attr, cmd in (("major", "inspect-get-major-version"), ("minor", "inspect-get-minor-version")):
            value = one(cmd)
            setattr(info, attr, int(value) if value and value.isdigit() else None)
        _mount(g, root)
        if info.os_type == "linux":
            _linux(g, info, root, boot_dir)
        elif info.os_type == "windows":
            _windows(g, info, root)
        return info
    finally:
        g.close()


def _mount(g: Guestfish, root: str) -> None:
    points = []
    for line in g("inspect-get-mountpoints", root, may_fail=True):
        mp, _, dev = line.partition(": ")
        if mp and dev:
            points.append((mp, dev))
    for mp, dev in sorted(points, key=lambda p: len(p[0])):
        g("mount-ro", dev, mp, may_fail=True)


def _firmware(g: Guestfish) -> str | None:
    partitioned = False
    esp = bios_boot = False
    for part in g("list-partitions", may_fail=True):
        dev = (g("part-to-dev", part, may_fail=True) or [""])[0]
        num = (g("part-to-partnum", part, may_fail=True) or [""])[0]
        if not dev or not num:
            continue
        partitioned = True
        table = (g("part-get-parttype", dev, may_fail=True) or [""])[0]
        if table == "gpt":
            guid = (g("part-get-gpt-type", dev, num, may_fail=True) or [""])[0].upper()
            esp = esp or guid == ESP_GUID
            bios_boot = bios_boot or guid == BIOS_BOOT_GUID
        elif table == "msdos":
            esp = esp or (g("part-get-mbr-id", dev, num, may_fail=True) or [""])[0] in ("239", "0xef")
    if esp and not bios_boot:
        return "uefi"
    return "bios" if partitioned else None


def _exists(g: Guestfish, path: str, kind: str = "exists") -> bool:
    return (g(kind, path, may_fail=True) or ["false"])[0] == "true"


def _version_key(path: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def _linux(g: Guestfish, info: GuestInfo, root: str, boot_dir: str | None) -> None:
    info.bootloader = next((name for path, name in BOOTLOADERS if _exists(g, path)), None)
    if info.bootloader == "uefi":
        info.firmware = "uefi"
    kernels = sorted((k for k in g("glob-expand", "/boot/vmlinuz-*", may_fail=True) if "rescue" not in k),
                     key=_version_key)
    if kernels:
        info.kernel = kernels[-1]
        version = info.kernel.removeprefix("/boot/vmlinuz-")
        for candidate in (f"/boot/initrd.img-{version}", f"/boot/initramfs-{version}.img", f"/boot/initrd-{version}"):
            if _exists(g, candidate, "is-file"):
                info.initrd = candidate
                break
        modules = f"/lib/modules/{version}"
        for attr, rel in (("virtio_block", "kernel/drivers/block/virtio_blk.ko*"),
                          ("virtio_net", "kernel/drivers/net/virtio_net.ko*")):
            found = bool(g("glob-expand", f"{modules}/{rel}", may_fail=True))
            if not found:
                found = bool(g("grep", rel.rsplit("/", 1)[-1].split(".")[0], f"{modules}/modules.builtin",
                               may_fail=True))
            setattr(info, attr, found)
    info.root_uuid = (g("vfs-uuid", root, may_fail=True) or [""])[0] or None
    if _exists(g, "/etc/kernel/cmdline", "is-file"):
        info.cmdline = " ".join(g("cat", "/etc/kernel/cmdline", may_fail=True)).strip() or None
    if _exists(g, "/etc/fstab", "is-file"):
        fstab = g("cat", "/etc/fstab", may_fail=True)
        info.fstab_sd = any(re.match(r"^\s*/dev/[sh]d[a-z]", line) for line in fstab)
    if boot_dir and info.kernel and info.initrd and not info.bootloader:
        kernel_file, initrd_file = str(Path(boot_dir) / "vmlinuz"), str(Path(boot_dir) / "initrd.img")
        g("download", info.kernel, kernel_file)
        g("download", info.initrd, initrd_file)
        info.kernel_file, info.initrd_file = kernel_file, initrd_file


def _windows(g: Guestfish, info: GuestInfo, root: str) -> None:
    info.bootloader = "windows"
    systemroot = (g("inspect-get-windows-systemroot", root, may_fail=True) or ["/Windows"])[0]
    for attr, driver in (("virtio_block", "viostor.sys"), ("virtio_net", "netkvm.sys")):
        real = g("case-sensitive-path", f"{systemroot}/System32/drivers/{driver}", may_fail=True)
        setattr(info, attr, bool(real) and _exists(g, real[0], "is-file"))
