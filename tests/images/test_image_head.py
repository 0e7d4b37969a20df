"""image_head: an image's first bytes, checked as a streamed upload arrives, agree with qemu-img about the
format and virtual size, and refuse what inspect_untrusted refuses (backing file, data file, wrong format)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.images.image_head import HEAD_MAX, bytes_needed, inspect_head

pytestmark = pytest.mark.fast


def _img(path: Path, fmt: str, *opts: str, size: str = "48M") -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *opts, str(path), size], check=True)
    return path.read_bytes()


def _head(data: bytes) -> bytes:
    """What a stream reader hands over: read until bytes_needed is satisfied."""
    n = 0
    while n < len(data) and bytes_needed(data[:n]) > n:
        n = min(len(data), max(n * 2, bytes_needed(data[:n]), 16))
    return data[:n]


def _virtual(path: Path, fmt: str) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return int(json.loads(out)["virtual-size"])


@pytest.mark.parametrize("opts", [(), ("-o", "compat=0.10"), ("-o", "cluster_size=2M"), ("-o", "cluster_size=4096"),
                                  ("-o", "extended_l2=on"), ("-o", "compression_type=zstd")])
def test_qcow2_heads_agree_with_qemu_img(workdir: Path, opts: tuple[str, ...]) -> None:
    path = workdir / "a.qcow2"
    data = _img(path, "qcow2", *opts)
    head = _head(data)
    assert len(head) <= HEAD_MAX
    found = inspect_head(head, "qcow2")
    assert found.format == "qcow2" and found.virtual_size == _virtual(path, "qcow2")


def test_raw_and_other_formats(workdir: Path) -> None:
    assert inspect_head(os.urandom(4096), "raw").virtual_size is None
    assert inspect_head(b"", "raw").format == "raw"  # an empty image is an empty raw image
    qcow2 = _img(workdir / "b.qcow2", "qcow2")
    with pytest.raises(InvalidInput, match="is a qcow2 image, not raw"):
        inspect_head(_head(qcow2), "raw")
    for fmt, name in (("vmdk", "vmdk"), ("vpc", "vpc"), ("vhdx", "vhdx"), ("vdi", "vdi")):
        data = _img(workdir / f"c.{fmt}", fmt, size="16M")
        with pytest.raises(InvalidInput, match=f"is a {name} image, not raw"):
            inspect_head(data[:512], "raw")
        with pytest.raises(InvalidInput, match=f"is a {name} image, not qcow2"):
            inspect_head(data[:512], "qcow2")
    with pytest.raises(InvalidInput, match="unknown image format"):
        inspect_head(b"", "vmdk")


def test_hostile_qcow2_heads_are_refused(workdir: Path) -> None:
    backed = _img(workdir / "d.qcow2", "qcow2", "-b", "/etc/shadow", "-F", "raw")
    with pytest.raises(InvalidInput, match=r"backing file \(/etc/shadow\)"):
        inspect_head(_head(backed), "qcow2")
    data_file = _img(workdir / "e.qcow2", "qcow2", "-o", f"data_file={workdir / 'e.data'}")
    with pytest.raises(InvalidInput, match="external data file"):
        inspect_head(_head(data_file), "qcow2")
    # the feature bit alone (no extension naming the file) is enough
    good = bytearray(_head(_img(workdir / "f.qcow2", "qcow2")))
    good[72 + 7] |= 4
    with pytest.raises(InvalidInput, match="external data file"):
        inspect_head(bytes(good), "qcow2")
    with pytest.raises(InvalidInput, match="too short"):
        inspect_head(b"QFI\xfb\x00\x00\x00\x03", "qcow2")
    bad_version = bytearray(_head(_img(workdir / "g.qcow2", "qcow2")))
    bad_version[4:8] = (7).to_bytes(4, "big")
    with pytest.raises(InvalidInput, match="version 7"):
        inspect_head(bytes(bad_version), "qcow2")
