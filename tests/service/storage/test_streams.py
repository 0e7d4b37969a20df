"""streams.upload_chunks and VolumeReader, the upload/download both front ends use, on a real dir pool:
an image that stops early, a source that fails, a wrong digest, a too large stream; what is left behind."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.service.storage import streams, volume_marks, volumes
from tests.service.storage_fixtures import *  # noqa: F403

pytestmark = pytest.mark.guest
MiB = 1024 ** 2


def _chunks(data: bytes, size: int = 300 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def _failing(data: bytes, after: int) -> Iterator[bytes]:
    sent = 0
    for chunk in _chunks(data):
        if sent >= after:
            raise OSError("the source went away")
        sent += len(chunk)
        yield chunk


def _paths(conn, pool: str) -> set[str]:
    return {v["name"] for v in volumes.list_volumes(conn, pool)}


def test_chunks_roundtrip_with_digest(conn, dir_pool, workdir, template_registry):
    data = os.urandom(3 * MiB + 17)
    digest = hashlib.sha256(data).hexdigest()
    seen: list[int] = []
    up = streams.upload_chunks(conn, dir_pool, "a.raw", _chunks(data), fmt="raw", length=len(data),
                               expected_sha256=digest.upper(), progress=lambda d, _t: seen.append(d))
    assert up["created"] and up["sha256"] == digest and up["capacity"] == len(data) and seen[-1] == len(data)
    reader = streams.VolumeReader(conn, dir_pool, "a.raw")
    assert reader.length == len(data) and b"".join(reader) == data and reader.sha256 == digest
    # a qcow2 image streamed without its length (chunked): the volume holds exactly its bytes
    src = workdir / "q.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", str(src), "32M"], check=True)
    q = src.read_bytes()
    up = streams.upload_chunks(conn, dir_pool, "q.qcow2", _chunks(q), fmt="qcow2")
    assert up["format"] == "qcow2" and up["capacity"] == 32 * MiB
    assert Path(up["path"]).read_bytes() == q


def test_failures_leave_no_new_volume_and_mark_an_old_one(conn, dir_pool, template_registry):
    data = os.urandom(4 * MiB)
    before = _paths(conn, dir_pool)
    with pytest.raises(streams.Truncated, match=f"stopped after {MiB + 212992} of {4 * MiB} bytes"):
        streams.upload_chunks(conn, dir_pool, "t.raw", _chunks(data[:MiB + 212992]), fmt="raw", length=len(data))
    with pytest.raises(OSError, match="went away"):
        streams.upload_chunks(conn, dir_pool, "f.raw", _failing(data, MiB), fmt="raw", length=len(data))
    with pytest.raises(streams.DigestMismatch, match="not the expected"):
        streams.upload_chunks(conn, dir_pool, "d.raw", _chunks(data), fmt="raw", expected_sha256="0" * 64)
    assert _paths(conn, dir_pool) == before
    # an existing volume is overwritten in place: a failure marks it until a complete upload
    streams.upload_chunks(conn, dir_pool, "old.raw", _chunks(data), fmt="raw", length=len(data))
    with pytest.raises(OSError):
        streams.upload_chunks(conn, dir_pool, "old.raw", _failing(data, MiB), length=len(data))
    info = volumes.volume_info(conn, dir_pool, "old.raw")
    assert "went away" in info["incomplete"] and "stopped after" in info["incomplete"]
    with pytest.raises(streams.TooLarge, match=r"more than volume 'old\.raw' can take"):
        streams.upload_chunks(conn, dir_pool, "old.raw", _chunks(data + data))  # no length: caught in flight
    streams.upload_chunks(conn, dir_pool, "old.raw", _chunks(data))
    assert "incomplete" not in volumes.volume_info(conn, dir_pool, "old.raw")
    # a volume deleted and made again at the same path outside kvmkit does not inherit the mark
    path = info["path"]
    volume_marks.set_mark(path, incomplete="x", owner="someone")
    os.unlink(path)
    Path(path).write_bytes(b"\0" * MiB)
    assert volume_marks.marks(path) == {}


def test_a_refused_head_writes_nothing(conn, dir_pool, workdir, template_registry):
    src = workdir / "k.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"], check=True)
    existing = streams.upload_chunks(conn, dir_pool, "keep.qcow2", _chunks(src.read_bytes()), fmt="qcow2")
    before = Path(existing["path"]).read_bytes()
    evil = workdir / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(evil)],
                   check=True)
    with pytest.raises(InvalidInput, match="backing file"):
        streams.upload_chunks(conn, dir_pool, "keep.qcow2", _chunks(evil.read_bytes()))
    assert Path(existing["path"]).read_bytes() == before
    assert "incomplete" not in volumes.volume_info(conn, dir_pool, "keep.qcow2")
    big = workdir / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "1G"], check=True)
    with pytest.raises(streams.TooLarge, match=r"larger than volume 'keep\.qcow2'"):
        streams.upload_chunks(conn, dir_pool, "keep.qcow2", _chunks(big.read_bytes()))
    assert Path(existing["path"]).read_bytes() == before
