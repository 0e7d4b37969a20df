"""images/micro.py: the decompressed PVH vmlinux next to the micro-guest's bzImage, and its fallback."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from kvmkit.errors import HostError
from kvmkit.images import micro

pytestmark = pytest.mark.fast


def fake_bzimage(path: Path, payload: bytes, setup_sects: int = 4) -> Path:
    """A bzImage-shaped file: setup header (HdrS, setup sectors, payload offset/length) and ``payload``."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    offset = 0x100  # where the payload starts inside the protected-mode part
    struct.pack_into("<II", setup, 0x248, offset, len(payload))
    path.write_bytes(bytes(setup) + b"\0" * offset + payload + b"\0" * 64)
    return path


def with_size(data: bytes, compressed: bytes) -> bytes:
    return compressed + struct.pack("<I", len(data))  # what the kernel build appends for zstd and lz4


def test_the_micro_kernel_has_a_pvh_vmlinux(micro_image):
    assert micro_image.pvh_kernel, micro_image.pvh_note
    vmlinux = Path(micro_image.pvh_kernel)
    assert vmlinux.parent == Path(micro_image.kernel).parent and vmlinux.name == "vmlinux"
    assert vmlinux.read_bytes()[:4] == b"\x7fELF" and micro.has_pvh_note(vmlinux)
    notes = subprocess.run(["readelf", "-n", str(vmlinux)], capture_output=True, text=True, check=True).stdout
    assert "0x00000012" in notes or "PHYS32_ENTRY" in notes  # the note QEMU boots through
    kernel, note = micro.fast_boot_kernel(micro_image.kernel)
    assert kernel == str(vmlinux) and note and "pvh" in note
    assert micro.fast_boot_kernel(str(vmlinux)) == (str(vmlinux), None), "applying twice changes nothing"
    assert micro.fast_boot_kernel("/boot/some-kernel") == ("/boot/some-kernel", None)


def test_out_dir_copy_carries_the_vmlinux(micro_image, tmp_path):
    image = micro.build(tmp_path / "out")
    assert image.pvh_kernel == str(tmp_path / "out" / "vmlinux") and Path(image.pvh_kernel).exists()


def compressors():
    elf = Path("/bin/busybox").read_bytes()  # an ELF without the PVH note
    yield "gzip", elf, gzip.compress(elf)
    yield "xz", elf, lzma.compress(elf, format=lzma.FORMAT_XZ) + struct.pack("<I", len(elf))
    yield "bzip2", elf, bz2.compress(elf)
    for tool, args in (("zstd", ["zstd", "-q", "-c"]), ("lz4", ["lz4", "-l", "-q", "-c"])):
        if shutil.which(tool):  # scripts/packages.txt installs both
            out = subprocess.run(args, input=elf, capture_output=True, check=True).stdout
            yield tool, elf, with_size(elf, out)


@pytest.mark.parametrize("kind, elf, payload", list(compressors()), ids=lambda v: v if isinstance(v, str) else "")
def test_extract_by_payload_magic(tmp_path, kind, elf, payload):
    out = tmp_path / "vmlinux"
    micro.extract_vmlinux(fake_bzimage(tmp_path / "bz", payload, setup_sects=7), out)
    assert out.read_bytes() == elf, kind
    assert not micro.has_pvh_note(out)


def test_extract_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(HostError, match="not a bzImage"):
        micro.extract_vmlinux(Path("/bin/busybox"), tmp_path / "x")
    with pytest.raises(HostError, match="unknown payload compression"):
        micro.extract_vmlinux(fake_bzimage(tmp_path / "bz", b"\x00\x11\x22\x33" * 10), tmp_path / "x")
    with pytest.raises(HostError, match="not an ELF"):
        micro.extract_vmlinux(fake_bzimage(tmp_path / "bz2", gzip.compress(b"not elf")), tmp_path / "x")


def test_a_kernel_without_pvh_falls_back_to_the_bzimage(tmp_path):
    cached = tmp_path / "cache"
    cached.mkdir()
    fake_bzimage(cached / "vmlinuz", gzip.compress(Path("/bin/busybox").read_bytes()))
    image = micro.MicroImage(str(cached / "vmlinuz"), str(cached / "initrd.img"), "console=ttyS0", "x", "k")
    (cached / "manifest.json").write_text(json.dumps(image.to_dict()))
    done = micro._add_pvh_kernel(cached, image)
    assert done.pvh_kernel is None and "no Xen PVH entry note" in done.pvh_note
    assert not (cached / "vmlinux").exists() and not list(cached.glob(".*")), "no temporary files left"
    assert json.loads((cached / "manifest.json").read_text())["pvh_note"] == done.pvh_note
    kernel, note = micro.fast_boot_kernel(image.kernel)
    assert kernel == image.kernel and note and note.startswith("bzImage: ")


def test_a_missing_decompressor_is_not_remembered(tmp_path, monkeypatch):
    elf = Path("/bin/busybox").read_bytes()
    lz4 = subprocess.run(["lz4", "-l", "-q", "-c"], input=elf, capture_output=True, check=True).stdout
    cached = tmp_path / "cache"
    cached.mkdir()
    fake_bzimage(cached / "vmlinuz", with_size(elf, lz4))
    image = micro.MicroImage(str(cached / "vmlinuz"), str(cached / "initrd.img"), "console=ttyS0", "x", "k")
    (cached / "manifest.json").write_text(json.dumps(image.to_dict()))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # a host without lz4
    done = micro._add_pvh_kernel(cached, image)
    assert "lz4 is not installed" in done.pvh_note and "apt-get install lz4" in done.pvh_note
    assert json.loads((cached / "manifest.json").read_text())["pvh_note"] == "", "retried once lz4 is there"
    monkeypatch.undo()
    assert "no Xen PVH entry note" in micro._add_pvh_kernel(cached, image).pvh_note


def test_the_fallback_note_is_one_line(tmp_path):
    cached = tmp_path / "cache"
    cached.mkdir()
    image = micro.MicroImage(str(cached / "vmlinuz"), str(cached / "initrd.img"), "console=ttyS0", "x", "k",
                             None, "lz4 could not decompress it:\nError 1\x07 " + "x" * 500)
    (cached / "manifest.json").write_text(json.dumps(image.to_dict()))
    kernel, note = micro.fast_boot_kernel(image.kernel)
    assert kernel == image.kernel and note and "\n" not in note and "\x07" not in note and len(note) <= 300
