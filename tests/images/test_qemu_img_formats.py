"""kvmkit's own format probe for the formats an import reads (never the name, never qemu-img's probe):
VMDK (sparse 'KDMV', streamOptimized, text descriptors), VHD (dynamic, and fixed with only a 'conectix'
footer), VHDX, VDI, QCOW2, raw; at an offset inside a larger file (a disk in an OVA's tar); untrusted
inspection with the backing link cut, measure, and conversion from inside a tar."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.images import qemu_img

pytestmark = pytest.mark.fast
MIB = 1024**2


def qimg(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture()
def raw(tmp_path: Path) -> Path:
    path = tmp_path / "src.raw"
    with path.open("wb") as fh:
        fh.truncate(4 * MIB)
        fh.seek(MIB)
        fh.write(b"kvmkit" * 100)
    return path


CASES = [("vmdk", []), ("vmdk", ["-o", "subformat=streamOptimized"]), ("vpc", []),
         ("vpc", ["-o", "subformat=fixed"]), ("vhdx", []), ("vdi", []), ("qcow2", [])]


@pytest.mark.parametrize(("fmt", "opts"), CASES, ids=["vmdk-sparse", "vmdk-stream", "vhd-dynamic", "vhd-fixed",
                                                      "vhdx", "vdi", "qcow2"])
def test_probe_reads_the_format_from_the_bytes(tmp_path: Path, raw: Path, fmt: str, opts: list[str]) -> None:
    img = tmp_path / "disk.bin"  # the name says nothing
    qimg("convert", "-f", "raw", "-O", fmt, *opts, str(raw), str(img))
    assert qemu_img.probe_format(img) == fmt
    info = qemu_img.inspect_untrusted(img, fmt, formats=qemu_img.READ_FORMATS)
    assert info["virtual-size"] >= 4 * MIB
    # the same image inside a tar, read in place at its offset
    tar_path = tmp_path / "pkg.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(raw, arcname="first.raw")
        tar.add(img, arcname="disk.bin")
    with tarfile.open(tar_path) as tar:
        member = tar.getmember("disk.bin")
    size = -(-member.size // 512) * 512
    assert qemu_img.probe_format(tar_path, offset=member.offset_data, size=member.size) == fmt
    qemu_img.inspect_untrusted(tar_path, fmt, formats=qemu_img.READ_FORMATS, offset=member.offset_data, size=size)
    src = qemu_img.untrusted_source(tar_path, offset=member.offset_data, size=size)
    assert qemu_img.measure(src, fmt)["required"] > 0
    out = tmp_path / "out.qcow2"
    seen: list[float] = []
    qemu_img.convert(src, out, fmt, "qcow2", progress=seen.append)
    assert seen[-1] == 100.0
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(out)], check=True,
                   capture_output=True)


def test_vmdk_descriptors_vdi_text_and_plain_raw(tmp_path: Path, raw: Path) -> None:
    desc = tmp_path / "flat.vmdk"
    qimg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat", str(raw), str(desc))
    assert qemu_img.probe_format(desc) == "vmdk" and qemu_img.is_vmdk_descriptor(desc)
    with pytest.raises(InvalidInput, match="VMDK descriptor"):
        qemu_img.inspect_untrusted(desc, "vmdk", formats=qemu_img.READ_FORMATS)
    assert qemu_img.probe_format(raw) == "raw"
    with pytest.raises(InvalidInput, match="is a raw image, not vmdk"):
        qemu_img.inspect_untrusted(raw, "vmdk", formats=qemu_img.READ_FORMATS)
    with pytest.raises(InvalidInput, match="unknown image format"):
        qemu_img.inspect_untrusted(raw, "vmdk")  # kvmkit's own formats only, unless the caller widens them


def test_convert_into_an_existing_image(tmp_path: Path, raw: Path) -> None:
    dst = tmp_path / "made-by-libvirt.qcow2"
    qimg("create", "-f", "qcow2", str(dst), str(4 * MIB))
    qemu_img.convert(raw, dst, "raw", "qcow2", existing=True)
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(raw), str(dst)], check=True,
                   capture_output=True)
    with pytest.raises(InvalidInput, match="exists already"):
        qemu_img.convert(raw, dst, "raw", "qcow2")
