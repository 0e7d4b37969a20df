"""The micro-guest: Debian's cloud kernel plus a busybox initramfs that boots in seconds under TCG.

Its /init (micro_init.sh) prints ``KVMKIT-GUEST-READY`` on ttyS0, then a ``KVMKIT-STATUS`` line every
2 s (uptime, online CPUs, MemTotal), brings hot-plugged CPUs online, runs DHCP on eth0 (``KVMKIT-IP``)
and powers off on the ACPI power button. Builds are cached in the data directory by input hash.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from kvmkit.config import cache_dir
from kvmkit.errors import HostError
from kvmkit.images.debian_kernel import KernelTree, fetch_kernel

BUSYBOX = Path("/bin/busybox")
DEFAULT_CMDLINE = "console=ttyS0 quiet panic=-1"
READY_MARKER = "KVMKIT-GUEST-READY"
STATUS_MARKER = "KVMKIT-STATUS"
IP_MARKER = "KVMKIT-IP"
FORMAT_VERSION = 3  # bump when the layout of the initramfs changes

# What the guest loads at boot, in this order after their dependencies.
GUEST_MODULES = [
    "evdev", "button", "virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "sd_mod",
    "virtio_balloon", "virtio_rng", "virtio_console",
]


@dataclass(frozen=True)
class MicroImage:
    """A built micro-guest: pass ``kernel``, ``initrd`` and ``cmdline`` to a direct-kernel-boot VM."""

    kernel: str
    initrd: str
    cmdline: str
    kernel_version: str
    key: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _module_index(modules_dir: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for path in modules_dir.rglob("*.ko"):
        index[path.name[:-3].replace("-", "_")] = path
    return index


def _depends(path: Path) -> list[str]:
    match = re.search(rb"\x00depends=([^\x00]*)\x00", path.read_bytes())
    if not match or not match.group(1):
        return []
    return [d.replace("-", "_") for d in match.group(1).decode().split(",") if d]


def module_load_order(modules_dir: Path, wanted: list[str]) -> list[Path]:
    """The .ko files for ``wanted`` and everything they depend on, dependencies first."""
    index = _module_index(modules_dir)
    builtin = set()
    builtin_file = modules_dir / "modules.builtin"
    if builtin_file.exists():
        builtin = {Path(line).name[:-3].replace("-", "_") for line in builtin_file.read_text().split()}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            if name in builtin:
                return
            raise HostError(f"kernel module {name} not found in {modules_dir}")
        for dep in _depends(index[name]):
            visit(dep)
        order.append(index[name])

    for name in wanted:
        visit(name)
    return order


def _resource(name: str) -> bytes:
    return resources.files("kvmkit.images").joinpath(name).read_bytes()


def _input_key(kernel: KernelTree) -> str:
    h = hashlib.sha256()
    h.update(f"v{FORMAT_VERSION} {kernel.version} {' '.join(GUEST_MODULES)}".encode())
    h.update(_resource("micro_init.sh"))
    h.update(_resource("micro_udhcpc.sh"))
    h.update(hashlib.sha256(BUSYBOX.read_bytes()).digest())
    return h.hexdigest()[:16]



def _write_cpio(files: dict[str, tuple[int, bytes | None]], out: Path) -> None:
    """Write a gzip-compressed newc cpio archive (what the kernel unpacks as initramfs)."""
    buf = io.BytesIO()
    ino = 1
    for name, (mode, data) in sorted(files.items()):
        body = data or b""
        nm = name.encode() + b"\x00"
        hdr = "070701" + "".join(f"{v:08x}" for v in (
            ino, mode, 0, 0, 1, 0, len(body), 0, 0, 0, 0, len(nm), 0))
        buf.write(hdr.encode() + nm)
        buf.write(b"\x00" * ((4 - (110 + len(nm)) % 4) % 4))
        buf.write(body)
        buf.write(b"\x00" * ((4 - len(body) % 4) % 4))
        ino += 1
    trailer = b"TRAILER!!!\x00"
    buf.write(("070701" + "0" * 8 * 11 + f"{len(trailer):08x}" + "0" * 8).encode() + trailer)
    buf.write(b"\x00" * ((4 - (110 + len(trailer)) % 4) % 4))
    out.write_bytes(gzip.compress(buf.getvalue(), compresslevel=6, mtime=0))


def _initramfs_files(kernel: KernelTree) -> dict[str, tuple[int, bytes | None]]:
    d, f = stat.S_IFDIR | 0o755, stat.S_IFREG
    files: dict[str, tuple[int, bytes | None]] = {}
    for dirname in ("bin", "sbin", "etc", "etc/acpi", "etc/acpi/PWRF", "etc/acpi/PWRB", "proc", "sys",
                    "dev", "tmp", "mnt", "run", "lib", "lib/modules", "root"):
        files[dirname] = (d, None)
    files["bin/busybox"] = (f | 0o755, BUSYBOX.read_bytes())
    files["init"] = (f | 0o755, _resource("micro_init.sh"))
    files["etc/udhcpc.sh"] = (f | 0o755, _resource("micro_udhcpc.sh"))
    poweroff = b"#!/bin/sh\necho KVMKIT-POWEROFF > /dev/console\nsync\npoweroff -f\n"
    files["etc/acpi/PWRF/00000080"] = (f | 0o755, poweroff)
    files["etc/acpi/PWRB/00000080"] = (f | 0o755, poweroff)
    files["etc/passwd"] = (f | 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
    files["etc/profile"] = (f | 0o644, b"export PATH=/bin:/sbin\nexport PS1='micro# '\n")
    load = []
    for ko in module_load_order(kernel.modules, GUEST_MODULES):
        files[f"lib/modules/{ko.name}"] = (f | 0o644, ko.read_bytes())
        load.append(ko.name)
    files["etc/kvmkit-modules"] = (f | 0o644, ("\n".join(load) + "\n").encode())
    return files


def build(out_dir: str | os.PathLike[str] | None = None, *, force: bool = False) -> MicroImage:
    """Build (or reuse the cached) micro-guest; copy it to ``out_dir`` when given."""
    if not BUSYBOX.exists():
        raise HostError(f"{BUSYBOX} not found", hint="apt-get install busybox-static (scripts/setup.sh does)")
    kernel = fetch_kernel(refresh=force)
    key = _input_key(kernel)
    cached = cache_dir("micro") / key
    manifest = cached / "manifest.json"
    if force or not manifest.exists():
        with tempfile.TemporaryDirectory(dir=cache_dir("micro")) as tmp:
            work = Path(tmp) / key
            work.mkdir()
            shutil.copy2(kernel.vmlinuz, work / "vmlinuz")
            _write_cpio(_initramfs_files(kernel), work / "initrd.img")
            image = MicroImage(str(cached / "vmlinuz"), str(cached / "initrd.img"), DEFAULT_CMDLINE,
                               kernel.version, key)
            (work / "manifest.json").write_text(json.dumps(image.to_dict(), indent=2))
            for p in (work, *work.iterdir()):
                p.chmod(0o755 if p.is_dir() else 0o644)
            if cached.exists():
                shutil.rmtree(cached)
            work.rename(cached)
    image = MicroImage(**json.loads(manifest.read_text()))
    if out_dir is None:
        return image
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vmlinuz", "initrd.img", "manifest.json"):
        shutil.copy2(cached / name, out / name)
    return MicroImage(str(out / "vmlinuz"), str(out / "initrd.img"), image.cmdline, image.kernel_version, key)
