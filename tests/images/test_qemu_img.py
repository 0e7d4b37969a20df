"""qemu-img wrapper: kvmkit's own format probe, explicit formats, refusing unsafe images, convert with progress."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kvmkit.errors import InvalidInput, NotFound, OperationFailed
from kvmkit.images import qemu_img

MiB = 1024**2


def _qcow2(path: Path, size: str = "16M", *opts: str) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *opts, str(path), size], check=True)
    return path


@pytest.mark.fast
def test_probe_format(workdir):
    raw = workdir / "a.raw"
    raw.write_bytes(os.urandom(4096))
    assert qemu_img.probe_format(raw) == "raw"
    assert qemu_img.probe_format(_qcow2(workdir / "a.qcow2")) == "qcow2"
    vmdk = workdir / "a.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "1M"], check=True)
    assert qemu_img.probe_format(vmdk) == "vmdk"
    empty = workdir / "empty"
    empty.write_bytes(b"")
    assert qemu_img.probe_format(empty) == "raw"
    with pytest.raises(NotFound):
        qemu_img.probe_format(workdir / "missing")


@pytest.mark.fast
def test_info_with_backing_chain(workdir):
    base = _qcow2(workdir / "base.qcow2", "32M")
    top = _qcow2(workdir / "top.qcow2", "32M", "-b", str(base), "-F", "qcow2")
    data = qemu_img.info(top, chain=True)
    assert data["format"] == "qcow2" and data["virtual-size"] == 32 * MiB
    summary = qemu_img.summary(data)
    assert summary["backing_file"] == str(base) and summary["backing_format"] == "qcow2"
    assert [b["path"] for b in summary["backing_chain"]] == [str(base)]


@pytest.mark.fast
def test_chain_not_followed_when_a_backing_format_is_missing(workdir):
    base = _qcow2(workdir / "base.qcow2")
    top = workdir / "top.qcow2"
    _qcow2(top, "16M", "-b", str(base), "-F", "qcow2")
    # turn the backing-format header extension into an unknown one: an old image without a backing format
    header = bytearray(top.read_bytes()[:65536])
    at = header.index(b"\xe2\x79\x2a\xca")
    with top.open("r+b") as fh:
        fh.seek(at)
        fh.write(b"\x12\x34\x56\x78")
    assert "backing-filename-format" not in qemu_img.info(top, "qcow2")
    data = qemu_img.info(top, "qcow2", chain=True)
    assert data["backing_chain"] == [] and data["backing_format_missing"] is True


@pytest.mark.fast
def test_create_needs_backing_format_and_valid_format(workdir):
    base = _qcow2(workdir / "b.qcow2")
    with pytest.raises(InvalidInput, match="backing file needs its format"):
        qemu_img.create(workdir / "o.qcow2", "qcow2", 0, backing=str(base))
    with pytest.raises(InvalidInput, match="unknown image format"):
        qemu_img.create(workdir / "o.vdi", "vdi", MiB)
    with pytest.raises(InvalidInput, match="positive"):
        qemu_img.create(workdir / "o.qcow2", "qcow2", 0)
    qemu_img.create(workdir / "o.qcow2", "qcow2", 0, backing=str(base), backing_fmt="qcow2")
    assert qemu_img.info(workdir / "o.qcow2", "qcow2")["backing-filename-format"] == "qcow2"
    assert not (workdir / "o.vdi").exists()


@pytest.mark.fast
def test_untrusted_images_are_refused(workdir):
    assert qemu_img.inspect_untrusted(_qcow2(workdir / "ok.qcow2"), "qcow2")["format"] == "qcow2"
    # a "raw" disk whose first bytes are a qcow2 header naming a host file: the classic probing attack
    evil = _qcow2(workdir / "evil.img", "1M", "-b", "/etc/shadow", "-F", "raw")
    with pytest.raises(InvalidInput, match="is a qcow2 image, not raw"):
        qemu_img.inspect_untrusted(evil, "raw")
    with pytest.raises(InvalidInput, match="backing file"):
        qemu_img.inspect_untrusted(evil, "qcow2")
    data_file = _qcow2(workdir / "ext.qcow2", "1M", "-o", f"data_file={workdir / 'ext.data'}")
    with pytest.raises(InvalidInput, match="external data file"):
        qemu_img.inspect_untrusted(data_file, "qcow2")
    raw = workdir / "r.raw"
    raw.write_bytes(b"\0" * MiB)
    with pytest.raises(InvalidInput, match="is a raw image, not qcow2"):
        qemu_img.inspect_untrusted(raw, "qcow2")
    with pytest.raises(InvalidInput, match="unknown image format"):
        qemu_img.inspect_untrusted(raw, "vmdk")


@pytest.mark.fast
def test_convert_raw_to_qcow2_and_back_with_progress(workdir):
    raw = workdir / "d.raw"
    payload = os.urandom(8 * MiB)
    raw.write_bytes(payload)
    seen: list[float] = []
    qemu_img.convert(raw, workdir / "d.qcow2", "raw", "qcow2", progress=seen.append)
    assert qemu_img.probe_format(workdir / "d.qcow2") == "qcow2"
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)
    qemu_img.convert(workdir / "d.qcow2", workdir / "back.raw", "qcow2", "raw")
    assert (workdir / "back.raw").read_bytes() == payload
    with pytest.raises(InvalidInput, match="exists already"):
        qemu_img.convert(raw, workdir / "d.qcow2", "raw", "qcow2")
    with pytest.raises(InvalidInput, match="unknown image format"):
        qemu_img.convert(raw, workdir / "x.vmdk", "raw", "vmdk")


@pytest.mark.fast
def test_failed_convert_leaves_no_partial_file(workdir):
    bad = workdir / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + b"\xff" * 4092)  # a broken qcow2 header
    with pytest.raises(OperationFailed, match="qemu-img convert"):
        qemu_img.convert(bad, workdir / "out.raw", "qcow2", "raw")
    assert not (workdir / "out.raw").exists()


@pytest.mark.fast
def test_interrupted_convert_leaves_no_partial_file(workdir):
    src = workdir / "big.raw"
    with src.open("wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(MiB))
    dst = workdir / "big.qcow2"

    class Stop(Exception):
        pass

    def stop_midway(pct: float) -> None:
        if 0 < pct < 100 and dst.exists():
            raise Stop

    with pytest.raises(Stop):
        qemu_img.convert(src, dst, "raw", "qcow2", progress=stop_midway)
    assert not dst.exists()
