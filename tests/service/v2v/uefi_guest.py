"""A Debian 12 guest that boots by itself under UEFI, as a VMware export of a UEFI Linux VM holds it.

kvmkit's debian-12 image is one ext4 file system booted by its kernel (direct kernel boot), so it has no
boot loader for virt-v2v to convert. This makes a copy of it that has one: a GPT disk with an EFI system
partition (FAT, label ESP, in /etc/fstab) and the image's file system in the second partition, GRUB
installed for x86_64-efi the way a removable disk has it (EFI/BOOT/BOOTX64.EFI; the image carries
GRUB's tools for this), its grub.cfg made by grub-mkconfig with the serial console on the kernel command
line, and the stub grub.cfg Debian keeps on the ESP (EFI/debian/grub.cfg) pointing at it. The file
system is copied into its partition on the host (qemu-img to raw, then dd, skipping holes); the rest runs
in one libguestfs appliance over the new disk: nothing on the host is mounted, and GRUB's own tools run
inside the guest's tree.

Built once per debian-12 image (cached by the image's key and this module's version) under
cache_dir()/debian-12-uefi; tests copy it, never boot it in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from pathlib import Path

from kvmkit.config import cache_dir
from kvmkit.service.v2v.inspect import guestfs_env

VERSION = 5  # bump when the layout below changes
MIB = 1024 * 1024
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
ESP_SECTORS = 2048, 206847  # 100 MiB from 1 MiB in
GRUB_DEFAULTS = ("GRUB_DEFAULT=0\\nGRUB_TIMEOUT=1\\nGRUB_DISTRIBUTOR=Debian\\n"
                 "GRUB_CMDLINE_LINUX=\\\"console=ttyS0 net.ifnames=0\\\"\\n"
                 "GRUB_TERMINAL=\\\"serial console\\\"\\nGRUB_SERIAL_COMMAND=\\\"serial --unit=0 --speed=115200\\\"\\n")

# The initramfs lists its modules (MODULES=list) instead of Debian's default MODULES=most: virt-v2v rebuilds it
# under TCG, and with most (192 modules of the cloud kernel) that rebuild was ~160 s of a ~230 s conversion.
# The list holds the storage and network drivers of both sides (VMware's SATA, KVM's virtio), so the guest is
# as bootable before and after as with most.
INITRAMFS_MODULES = "".join(f"{m}\\n" for m in ("ahci", "sd_mod", "virtio_pci", "virtio_blk", "virtio_scsi",
                                                "virtio_net"))

# Debian's signed-boot layout keeps a stub grub.cfg on the ESP that finds the real one; virt-v2v 2.2 looks for
# a UEFI guest's GRUB configuration on the ESP only ("no bootloader detected" without it).
ESP_STUB = ("search --no-floppy --label --set=root root\\nset prefix=($root)/boot/grub\\n"
            "configfile $prefix/grub.cfg\\n")


def _script(raw: str) -> str:
    first, last = ESP_SECTORS
    return "\n".join([
        f"add-drive {raw} format:raw",
        "run",
        "part-init /dev/sda gpt",  # the tables sit in the first and last MiB: the file system copied in stays
        f"part-add /dev/sda p {first} {last}",
        f"part-add /dev/sda p {last + 1} -2048",
        f"part-set-gpt-type /dev/sda 1 {ESP_TYPE}",
        "mkfs vfat /dev/sda1 label:ESP",
        "mount /dev/sda2 /",
        "mkdir-p /boot/efi",
        "mount /dev/sda1 /boot/efi",
        'write-append /etc/fstab "LABEL=ESP /boot/efi vfat umask=0077 0 1\\n"',
        f'write /etc/default/grub "{GRUB_DEFAULTS}"',
        'write /etc/initramfs-tools/conf.d/kvmkit-test.conf "MODULES=list\\n"',
        f'write-append /etc/initramfs-tools/modules "{INITRAMFS_MODULES}"',
        'command "/usr/sbin/grub-install --target=x86_64-efi --efi-directory=/boot/efi --boot-directory=/boot '
        '--removable --no-nvram"',
        'command "/usr/sbin/grub-mkconfig -o /boot/grub/grub.cfg"',
        "mkdir-p /boot/efi/EFI/debian",
        f'write /boot/efi/EFI/debian/grub.cfg "{ESP_STUB}"',
        "umount-all",
        "",
    ])


def uefi_disk(image: dict[str, str]) -> Path:
    """The UEFI/GRUB copy of the debian-12 ``image`` (debian.build()'s result), built on first use.

    The raw image (the file system, then zeros up to the image's virtual size) goes into partition 2 with
    dd, which skips its holes and zeros: copied inside the appliance it took 44 s under TCG, here a few.
    The disk is 128 MiB larger than the image, so partition 2 (from 101 MiB to 1 MiB before the end) holds
    all of it."""
    key = hashlib.sha256(json.dumps({"image": image["key"], "version": VERSION}).encode()).hexdigest()[:16]
    disk = cache_dir("debian-12-uefi") / key / "disk.qcow2"
    if disk.exists():
        return disk
    disk.parent.mkdir(parents=True, exist_ok=True)
    part = disk.with_suffix(".part")
    with tempfile.TemporaryDirectory(dir=disk.parent) as tmp:
        fs, raw = Path(tmp) / "fs.raw", Path(tmp) / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", image["path"], str(fs)], check=True)
        with raw.open("wb") as fh:
            fh.truncate(fs.stat().st_size + 128 * MIB)
        offset = (ESP_SECTORS[1] + 1) * 512
        assert offset % MIB == 0
        subprocess.run(["dd", f"if={fs}", f"of={raw}", "bs=1M", f"seek={offset // MIB}", "conv=notrunc,sparse",
                        "status=none"], check=True)
        fs.unlink()
        res = subprocess.run(["guestfish"], input=_script(str(raw)), capture_output=True, text=True,
                             env=guestfs_env(), timeout=1800, check=False)
        assert res.returncode == 0, f"making the UEFI copy failed: {res.stderr[-2000:]}"
        try:
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(part)], check=True)
            os.replace(part, disk)
        finally:
            part.unlink(missing_ok=True)
    return disk
