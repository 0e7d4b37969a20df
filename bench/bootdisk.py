"""A bootable disk holding the micro-guest, for template benchmarks.

``kvmkit vm create --template`` boots the template's disk (no direct kernel boot), so the template is a
disk that boots by itself: a 64 MiB FAT file system at the start of the disk (no partition table)
with SYSLINUX in its boot sector and the micro-guest's kernel and initramfs in it. Written with
mkfs.vfat, syslinux --install and mtools: no mounts, no loop devices. Data written past the first
GiB (provision.py) does not touch it.
"""

from __future__ import annotations

from pathlib import Path

from bench.common import Ctx, run

BOOT_MIB = 64
PACKAGES = "syslinux syslinux-common mtools dosfstools"


def syslinux_cfg(cmdline: str) -> str:
    return ("DEFAULT micro\nPROMPT 0\nTIMEOUT 0\nLABEL micro\n  KERNEL vmlinuz\n  INITRD initrd.img\n"
            f"  APPEND {cmdline}\n")


def boot_image(ctx: Ctx) -> Path:
    """The raw boot image (cached for the run in the work directory)."""
    img = ctx.path("bootdisk", "boot.img")
    if img.exists():
        return img
    tmp = img.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    try:
        run(["mkfs.vfat", "-n", "KVMKITMICRO", "-C", str(tmp), str(BOOT_MIB * 1024)])
        run(["syslinux", "--install", str(tmp)])
        cfg = ctx.path("bootdisk", "syslinux.cfg")
        cfg.write_text(syslinux_cfg(ctx.cmdline))
        for src, dst in ((ctx.kernel, "vmlinuz"), (ctx.initrd, "initrd.img"), (str(cfg), "syslinux.cfg")):
            run(["mcopy", "-o", "-i", str(tmp), src, f"::{dst}"])
    except FileNotFoundError as exc:
        raise RuntimeError(f"{exc.filename} missing: apt-get install {PACKAGES} (bench/run does)") from exc
    tmp.rename(img)
    return img


def make_template_disk(ctx: Ctx, path: Path, size_gib: int) -> None:
    """qcow2 at ``path`` of ``size_gib`` GiB virtual size that boots the micro-guest."""
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(boot_image(ctx)), str(path)])
    run(["qemu-img", "resize", "-q", "-f", "qcow2", str(path), f"{size_gib}G"])
