"""qcow2_header.backing_files: the backing chain from the headers agrees with qemu-img's, and anything
the headers cannot settle is left to qemu-img (None)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from kvmkit.images.qcow2_header import backing_files


def _img(path: Path, fmt: str = "qcow2", *opts: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *opts, str(path), "16M"], check=True)
    return path


def _qemu_img_chain(path: Path) -> list[str]:
    out = subprocess.run(["qemu-img", "info", "-U", "--backing-chain", "--output=json", "-f", "qcow2", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return [os.path.realpath(i["filename"]) for i in json.loads(out)[1:]]


@pytest.mark.fast
def test_chain_matches_qemu_img(workdir):
    base = _img(workdir / "base.raw", "raw")
    mid = _img(workdir / "mid.qcow2", "qcow2", "-b", str(base), "-F", "raw")
    sub = workdir / "sub"
    sub.mkdir()
    # a relative backing name is relative to the overlay's directory, as QEMU reads it
    top = _img(sub / "top.qcow2", "qcow2", "-b", "../mid.qcow2", "-F", "qcow2")
    alone = _img(workdir / "alone.qcow2")
    for image in (top, mid, alone):
        found = backing_files(str(image))
        assert found is not None
        assert [os.path.realpath(p) for p in found] == _qemu_img_chain(image)
    assert [os.path.realpath(p) for p in backing_files(str(top))] == [str(mid), str(base)]
    assert backing_files(str(alone)) == []


@pytest.mark.fast
def test_what_the_headers_cannot_settle_is_left_to_qemu_img(workdir):
    raw = workdir / "disk.raw"
    raw.write_bytes(os.urandom(4096))
    assert backing_files(str(raw)) is None  # not qcow2
    assert backing_files(str(workdir / "missing.qcow2")) is None
    base = _img(workdir / "base.qcow2")
    top = _img(workdir / "top.qcow2", "qcow2", "-b", str(base), "-F", "qcow2")
    header = top.read_bytes()[:65536]
    with top.open("r+b") as fh:  # no recorded backing format (an old image): qemu-img would probe it
        fh.seek(header.index(b"\xe2\x79\x2a\xca"))
        fh.write(b"\x12\x34\x56\x78")
    assert backing_files(str(top)) is None
    proto = _img(workdir / "proto.qcow2", "qcow2", "-u", "-b", "nbd://localhost/x", "-F", "raw")
    assert backing_files(str(proto)) is None
    truncated = workdir / "truncated.qcow2"
    truncated.write_bytes(base.read_bytes()[:6])
    assert backing_files(str(truncated)) is None
