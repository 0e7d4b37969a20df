"""The debian-12 guest image: debootstrap from Debian's mirror, sealed as a template, no VM needed to build.

Steps: debootstrap bookworm into a directory, apt-get install the guest packages in a chroot (so virtual
packages resolve), seal it (:mod:`kvmkit.images.debian_seal`), ``mkfs.ext4 -d`` the tree into a raw file
(one root file system, no partition table, no swap), ``qemu-img convert`` it to qcow2. The kernel and
initrd are copied next to the image: boot it by direct kernel boot with :data:`CMDLINE`.
GRUB's tools for UEFI (grub-install, grub-mkconfig, the x86_64-efi modules) are installed but not set up,
so a copy of the image can be given a boot loader of its own without the network (the V2V tests make a
UEFI disk of it that way); zstd makes the initramfs, which Debian compresses with it (gzip is ~3x slower
to rebuild under TCG, which virt-v2v does).
Builds are cached in the data directory by a hash of their inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from kvmkit.config import cache_dir
from kvmkit.errors import HostError, InvalidInput
from kvmkit.images.plain_copy import copy_file

SUITE = "bookworm"
MIRROR = os.environ.get("KVMKIT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
FORMAT_VERSION = 3  # bump when the build or the sealing changes (3: the chroot gets its own /dev)
CMDLINE = "console=ttyS0 root=/dev/vda rw net.ifnames=0"
BOOTSTRAP_INCLUDE = ["systemd-sysv", "ca-certificates", "python3-cffi-backend", "dbus"]
PACKAGES = ["linux-image-cloud-amd64", "qemu-guest-agent", "cloud-init", "openssh-server",
            "systemd-resolved", "sudo", "less", "iproute2", "netbase", "e2fsprogs", "locales",
            "zstd", "grub-common", "grub2-common", "grub-efi-amd64-bin"]  # zstd: initramfs; GRUB: see below
HEADROOM_MIB = 512
MIN_DISK_MIB = 4096  # virtual size; sparse in the qcow2. cloud-init grows the fs when the disk grows


def _run(cmd: list[str], *, env: dict[str, str] | None = None, what: str | None = None) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    except FileNotFoundError as err:
        raise HostError(f"{cmd[0]} not found", hint="apt-get install debootstrap e2fsprogs qemu-utils") from err
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip())[-800:]
        raise HostError(f"{what or ' '.join(cmd[:3])} failed: {tail}",
                        hint="check that the Debian mirror is reachable and the disk has space")
    return res.stdout


def inputs() -> dict[str, object]:
    return {"suite": SUITE, "mirror": MIRROR, "format": FORMAT_VERSION, "include": BOOTSTRAP_INCLUDE,
            "packages": PACKAGES, "cmdline": CMDLINE}


def cache_key() -> str:
    return hashlib.sha256(json.dumps(inputs(), sort_keys=True).encode()).hexdigest()[:16]


def _chroot_env() -> dict[str, str]:
    return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8",
            "HOME": "/root"}


# Device nodes apt and the packages' scripts need in the chroot: (name, major, minor).
_DEV_NODES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9),
              ("tty", 5, 0))


class _Mounts:
    """/proc, /sys and /dev inside the chroot while apt runs; always unmounted again.

    /dev is a tmpfs of its own with the few nodes apt needs, never the host's /dev bound in: package scripts
    in the chroot (udev's among them) chgrp and chmod device nodes such as /dev/kvm to the *guest's* group
    ids, which on a bind mount changed the host's /dev/kvm (to gid 104 here) and left libvirt unable to use
    KVM. /sys is mounted read-only for the same reason (a `udevadm trigger` would reach the host)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.done: list[Path] = []

    def __enter__(self) -> _Mounts:
        try:
            for src, rel, args in (("proc", "proc", ["-t", "proc"]), ("sysfs", "sys", ["-t", "sysfs", "-o", "ro"]),
                                   ("tmpfs", "dev", ["-t", "tmpfs", "-o", "mode=0755,nosuid"])):
                self._mount(src, rel, args)
            dev = self.root / "dev"
            for name, major, minor in _DEV_NODES:
                os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
                os.chmod(dev / name, 0o666)  # mknod applies the umask
            self._mount("devpts", "dev/pts", ["-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620"])
            (dev / "ptmx").symlink_to("pts/ptmx")
            for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                                 ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
                (dev / name).symlink_to(target)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _mount(self, src: str, rel: str, args: list[str]) -> None:
        target = self.root / rel
        target.mkdir(parents=True, exist_ok=True)
        _run(["mount", *args, src, str(target)], what=f"mount {rel}")
        self.done.append(target)

    def __exit__(self, *exc: object) -> None:
        for target in reversed(self.done):
            subprocess.run(["umount", "-l", str(target)], capture_output=True, check=False)
        self.done = []


def _bootstrap(root: Path, say: Callable[[str], None]) -> None:
    say(f"debootstrap {SUITE} from {MIRROR}")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(BOOTSTRAP_INCLUDE)}", SUITE, str(root), MIRROR],
         what="debootstrap")
    (root / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} {SUITE} main\ndeb {MIRROR} {SUITE}-updates main\n"
        f"deb http://deb.debian.org/debian-security {SUITE}-security main\n")
    # no kernel postinst hook should look for a boot loader
    (root / "etc/kernel-img.conf").write_text("do_symlinks = yes\nlink_in_boot = yes\n")
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")  # start no services in the chroot
    policy.chmod(0o755)
    env = _chroot_env()
    say(f"apt-get install {' '.join(PACKAGES)}")
    with _Mounts(root):
        _run(["chroot", str(root), "apt-get", "update", "-q"], env=env, what="apt-get update (chroot)")
        _run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
             env=env, what="apt-get install (chroot)")
        _run(["chroot", str(root), "apt-get", "clean"], env=env, what="apt-get clean")
        _run(["chroot", str(root), "systemctl", "enable", "systemd-networkd", "systemd-resolved"], env=env,
             what="systemctl enable (chroot)")
    policy.unlink()


def _kernel_files(root: Path) -> tuple[Path, Path]:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise HostError("the debootstrapped tree has no kernel or initrd in /boot",
                        hint="linux-image-cloud-amd64 failed to install; rebuild with --force")
    return kernels[-1], initrds[-1]


def _make_disk(root: Path, out: Path, work: Path) -> None:
    from kvmkit.images import qemu_img

    used_kib = int(_run(["du", "-sxk", str(root)]).split()[0])
    size_mib = max(MIN_DISK_MIB, used_kib // 1024 + HEADROOM_MIB + used_kib // 4096)
    raw = work / "root.raw"
    with raw.open("wb") as fh:
        fh.truncate(size_mib * 1024 * 1024)
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw)], what="mkfs.ext4 -d")
    tmp = out.with_name(out.name + ".part")
    tmp.unlink(missing_ok=True)
    qemu_img.convert(raw, tmp, "raw", "qcow2")
    tmp.rename(out)
    raw.unlink()


def _remove_tree(work: Path) -> None:
    """Delete the build tree, but never while anything is mounted below it (a bind-mounted /dev!)."""
    for rel in ("root/dev/pts", "root/dev", "root/sys", "root/proc"):
        subprocess.run(["umount", "-l", str(work / rel)], capture_output=True, check=False)
    with open("/proc/self/mounts") as fh:
        mounted = [line.split()[1] for line in fh if line.split()[1].startswith(str(work))]
    if mounted:
        raise HostError(f"build tree {work} still has mounts: {', '.join(mounted)}; not deleting it",
                        hint=f"umount them by hand, then rm -rf {work}")
    shutil.rmtree(work, ignore_errors=True)


def build(out: str | None, *, force: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """Build (or reuse from cache) the debian-12 image; copy it to ``out`` if given. Returns the paths.

    ``progress(stage)`` is called as each stage starts (the whole build takes a few minutes).
    """
    from kvmkit.images.debian_seal import seal

    if out is not None and not out.endswith(".qcow2"):
        raise InvalidInput(f"--out {out} must name a .qcow2 file", hint="e.g. --out /var/lib/kvmkit/debian-12.qcow2")
    key = cache_key()
    cached = cache_dir("debian-12") / key
    image, kernel, initrd = cached / "debian-12.qcow2", cached / "vmlinuz", cached / "initrd.img"
    if force or not (image.exists() and kernel.exists() and initrd.exists()):
        if os.geteuid() != 0:
            raise HostError("building the debian-12 image needs root (debootstrap, chroot, mount)")
        cached.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=cache_dir("debian-12"), prefix="build-"))
        root = work / "root"
        try:
            say = progress or (lambda _stage: None)
            _bootstrap(root, say)
            vmlinuz, initrd_src = _kernel_files(root)
            copy_file(vmlinuz, kernel, metadata=False)
            copy_file(initrd_src, initrd, metadata=False)
            say("sealing: machine-id, SSH host keys, net rules, cloud-init NoCloud")
            seal(root)
            image.unlink(missing_ok=True)
            say("mkfs.ext4 -d, qemu-img convert to qcow2")
            _make_disk(root, image, work)
        except BaseException:
            for f in (image, kernel, initrd):
                f.unlink(missing_ok=True)
            raise
        finally:
            _remove_tree(work)
        (cached / "inputs.json").write_text(json.dumps(inputs(), indent=1))
    result = {"path": str(image), "kernel": str(kernel), "initrd": str(initrd), "cmdline": CMDLINE,
              "format": "qcow2", "key": key}
    if out is not None:
        dest = Path(out).resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
        for src, name in ((image, dest.name), (kernel, dest.stem + ".vmlinuz"), (initrd, dest.stem + ".initrd")):
            copy_file(src, dest.with_name(name), metadata=False)
        result.update(path=str(dest), kernel=str(dest.with_name(dest.stem + ".vmlinuz")),
                      initrd=str(dest.with_name(dest.stem + ".initrd")))
    return result
