"""Volumes on a real dir pool: create, clone, linked clone, resize, wipe, upload/download, delete, bad input."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.service.storage import streams as volume_streams
from kvmkit.service.storage import volumes
from tests.service.storage_fixtures import *  # noqa: F403

GiB = 1024**3
MiB = 1024**2


def _files(conn, pool: str) -> set[str]:
    target = Path(conn.storagePoolLookupByName(pool).XMLDesc(0).split("<path>")[1].split("</path>")[0])
    return {p.name for p in target.iterdir()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.fast
@pytest.mark.parametrize(("text", "expected"), [
    ("512M", 512 * MiB), ("1G", GiB), ("1GiB", GiB), ("2048", 2048 * MiB), ("10G", 10 * GiB), ("1GB", 10**9),
    ("4096B", 4096), (123, 123),
])
def test_parse_size(text, expected):
    assert volumes.parse_size(text) == expected


@pytest.mark.fast
@pytest.mark.parametrize("text", ["0", "-1G", "-5", "abc", "1X", "", "0M"])
def test_parse_size_rejects(text):
    with pytest.raises(InvalidInput):
        volumes.parse_size(text)


@pytest.mark.guest
def test_create_sparse_and_preallocated(conn, dir_pool):
    q = volumes.create_volume(conn, dir_pool, "sparse.qcow2", "1G")
    assert q["format"] == "qcow2" and q["capacity"] == GiB and q["allocation"] < 2 * MiB
    r = volumes.create_volume(conn, dir_pool, "sparse.raw", "256M", fmt="raw")
    assert r["format"] == "raw" and r["capacity"] == 256 * MiB and r["allocation"] < MiB
    full = volumes.create_volume(conn, dir_pool, "full.raw", "32M", fmt="raw", preallocation="full")
    assert full["allocation"] >= 32 * MiB
    fq = volumes.create_volume(conn, dir_pool, "full.qcow2", "32M", preallocation="full")
    assert fq["allocation"] >= 32 * MiB
    names = {v["name"] for v in volumes.list_volumes(conn, dir_pool)}
    assert names == {"sparse.qcow2", "sparse.raw", "full.raw", "full.qcow2"}
    out = subprocess.run(["qemu-img", "info", "-f", "qcow2", q["path"]], capture_output=True, text=True).stdout
    assert "file format: qcow2" in out


@pytest.mark.guest
def test_clone_and_linked_clone(conn, dir_pool):
    volumes.create_volume(conn, dir_pool, "base.qcow2", "2G")
    full = volumes.clone_volume(conn, dir_pool, "base.qcow2", "copy.qcow2")
    assert full["format"] == "qcow2" and full["capacity"] == 2 * GiB and full["backing_chain"] == []
    linked = volumes.clone_volume(conn, dir_pool, "base.qcow2", "linked.qcow2", linked=True)
    base_path = str(Path(full["path"]).with_name("base.qcow2"))
    assert linked["backing_chain"] == [{"path": base_path, "format": "qcow2"}]
    out = subprocess.run(["qemu-img", "info", "-U", "-f", "qcow2", linked["path"]], capture_output=True,
                         text=True).stdout
    assert "backing file format: qcow2" in out  # the backing format is recorded, never probed
    with pytest.raises(Conflict, match=r"backing file of linked\.qcow2"):
        volumes.delete_volume(conn, dir_pool, "base.qcow2")
    volumes.delete_volume(conn, dir_pool, "linked.qcow2")
    volumes.delete_volume(conn, dir_pool, "base.qcow2")
    with pytest.raises(Conflict, match="exists already"):
        volumes.clone_volume(conn, dir_pool, "copy.qcow2", "copy.qcow2")
    raw = volumes.create_volume(conn, dir_pool, "b.raw", "8M", fmt="raw")
    Path(raw["path"]).write_bytes(b"kvmkit" * 1000)
    rawcopy = volumes.clone_volume(conn, dir_pool, "b.raw", "b2.raw")
    assert Path(rawcopy["path"]).read_bytes()[:6000] == b"kvmkit" * 1000


@pytest.mark.guest
def test_create_with_backing_volume(conn, dir_pool):
    base = volumes.create_volume(conn, dir_pool, "base.raw", "64M", fmt="raw")
    top = volumes.create_volume(conn, dir_pool, "top.qcow2", "64M", backing="base.raw")
    assert top["backing_chain"] == [{"path": base["path"], "format": "raw"}]
    with pytest.raises(InvalidInput, match="only qcow2"):
        volumes.create_volume(conn, dir_pool, "top.raw", "64M", fmt="raw", backing="base.raw")
    with pytest.raises(NotFound, match="missing"):
        volumes.create_volume(conn, dir_pool, "top2.qcow2", "64M", backing="missing.qcow2")


@pytest.mark.guest
def test_resize_grow_and_shrink(conn, dir_pool):
    volumes.create_volume(conn, dir_pool, "r.qcow2", "1G")
    assert volumes.resize_volume(conn, dir_pool, "r.qcow2", "2G")["capacity"] == 2 * GiB
    with pytest.raises(InvalidInput, match="--allow-shrink"):
        volumes.resize_volume(conn, dir_pool, "r.qcow2", "1G")
    assert volumes.volume_info(conn, dir_pool, "r.qcow2")["capacity"] == 2 * GiB
    res = volumes.resize_volume(conn, dir_pool, "r.qcow2", "1G", allow_shrink=True)
    assert res["capacity"] == GiB and "data past the new end" in res["warning"]
    assert volumes.volume_info(conn, dir_pool, "r.qcow2")["capacity"] == GiB
    with pytest.raises(InvalidInput, match="free"):
        volumes.resize_volume(conn, dir_pool, "r.qcow2", "100T")


@pytest.mark.guest
def test_wipe(conn, dir_pool):
    raw = volumes.create_volume(conn, dir_pool, "w.raw", "4M", fmt="raw")
    Path(raw["path"]).write_bytes(os.urandom(4 * MiB))
    volumes.wipe_volume(conn, dir_pool, "w.raw")
    assert Path(raw["path"]).read_bytes() == b"\0" * (4 * MiB)
    volumes.create_volume(conn, dir_pool, "wb.qcow2", "64M")
    q = volumes.clone_volume(conn, dir_pool, "wb.qcow2", "w.qcow2", linked=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x55 0 1M", q["path"]], check=True, capture_output=True)
    volumes.wipe_volume(conn, dir_pool, "w.qcow2")
    after = volumes.volume_info(conn, dir_pool, "w.qcow2")
    assert after["capacity"] == 64 * MiB and after["backing_chain"][0]["format"] == "qcow2"
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0 0 1M", q["path"]], capture_output=True, text=True)
    assert "Pattern verification failed" not in out.stdout and out.returncode == 0


@pytest.mark.guest
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_upload_download_roundtrip(conn, dir_pool, workdir, fmt):
    src = workdir / f"up.{fmt}"
    if fmt == "raw":
        src.write_bytes(os.urandom(5 * MiB))
    else:
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(src), "64M"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 2M", str(src)], check=True,
                       capture_output=True)
    seen: list[int] = []
    up = volume_streams.upload(conn, dir_pool, f"up.{fmt}", src, fmt=fmt, progress=lambda d, _t: seen.append(d))
    assert up["created"] and up["format"] == fmt
    assert seen and seen[-1] == src.stat().st_size
    dst = workdir / f"down.{fmt}"
    down = volume_streams.download(conn, dir_pool, f"up.{fmt}", dst)
    assert down["bytes"] == src.stat().st_size
    assert _sha(dst) == _sha(src)
    assert not dst.with_name(dst.name + ".part").exists()
    with pytest.raises(InvalidInput, match="exists already"):
        volume_streams.download(conn, dir_pool, f"up.{fmt}", dst)


@pytest.mark.guest
def test_upload_refusals_leave_nothing(conn, dir_pool, workdir):
    before = _files(conn, dir_pool)
    big = workdir / "big.raw"
    big.write_bytes(os.urandom(2 * MiB))
    volumes.create_volume(conn, dir_pool, "small.raw", "1M", fmt="raw")
    before = _files(conn, dir_pool)
    small_before = _sha(Path(volumes.volume_info(conn, dir_pool, "small.raw")["path"]))
    with pytest.raises(InvalidInput, match=r"larger than volume .small\.raw."):
        volume_streams.upload(conn, dir_pool, "small.raw", big)
    assert _sha(Path(volumes.volume_info(conn, dir_pool, "small.raw")["path"])) == small_before
    # a qcow2 naming a backing file (here: a host file) is refused before any volume exists
    evil = workdir / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(evil)],
                   check=True)
    with pytest.raises(InvalidInput, match="backing file"):
        volume_streams.upload(conn, dir_pool, "evil.qcow2", evil, fmt="qcow2")
    # a qcow2 file declared raw is refused
    plain = workdir / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(plain), "16M"], check=True)
    with pytest.raises(InvalidInput, match="is a qcow2 image, not raw"):
        volume_streams.upload(conn, dir_pool, "plain.raw", plain, fmt="raw")
    with pytest.raises(InvalidInput, match="format"):
        volume_streams.upload(conn, dir_pool, "noformat", plain)
    with pytest.raises(NotFound):
        volume_streams.upload(conn, dir_pool, "missing.raw", workdir / "nope.raw", fmt="raw")
    assert _files(conn, dir_pool) == before


@pytest.mark.guest
@pytest.mark.parametrize("name", ["a/b", "..", "../escape", "x\x00y", "", "-lead", "a" * 65])
def test_bad_volume_names(conn, dir_pool, name):
    before = _files(conn, dir_pool)
    with pytest.raises(InvalidInput, match="volume name"):
        volumes.create_volume(conn, dir_pool, name, "1M")
    assert _files(conn, dir_pool) == before


@pytest.mark.guest
@pytest.mark.parametrize(("size", "fmt", "message"), [
    ("0", "qcow2", "positive"), ("-1G", "qcow2", "positive"), ("1000T", "qcow2", "free"),
    ("1000T", "raw", "free"), ("1G", "vmdk", "unknown volume format"), ("1G", "qcow3", "unknown volume format"),
])
def test_bad_sizes_and_formats(conn, dir_pool, size, fmt, message):
    before = _files(conn, dir_pool)
    with pytest.raises(InvalidInput, match=message):
        volumes.create_volume(conn, dir_pool, "v.img", size, fmt=fmt)
    assert _files(conn, dir_pool) == before


@pytest.mark.guest
def test_delete_refused_while_vm_uses_it(conn, dir_pool, micro_guest):
    vol = volumes.create_volume(conn, dir_pool, "busy.qcow2", "64M")
    guest = micro_guest("busy", start=False, disks=[{"path": vol["path"], "format": "qcow2"}])
    with pytest.raises(Conflict, match=f"in use by VM {guest.name}"):
        volumes.delete_volume(conn, dir_pool, "busy.qcow2")
    with pytest.raises(Conflict, match=guest.name):
        volumes.wipe_volume(conn, dir_pool, "busy.qcow2")
    assert Path(vol["path"]).exists()
    guest.dom.undefine()
    volumes.delete_volume(conn, dir_pool, "busy.qcow2")
    assert not Path(vol["path"]).exists()


@pytest.mark.guest
def test_missing_pool_and_volume(conn, dir_pool, prefix):
    with pytest.raises(NotFound, match="pool"):
        volumes.create_volume(conn, f"{prefix}nopool", "a.qcow2", "1M")
    with pytest.raises(NotFound, match=r"nothere\.qcow2"):
        volumes.volume_info(conn, dir_pool, "nothere.qcow2")


@pytest.mark.guest
def test_info_is_quick_for_20g_linked_clone(conn, dir_pool):
    volumes.create_volume(conn, dir_pool, "t20.qcow2", "20G")
    # quick because nothing is copied: the clone is an empty overlay over the 20 GiB volume (how long it
    # takes is measured in bench/, scenario 1)
    info = volumes.clone_volume(conn, dir_pool, "t20.qcow2", "c20.qcow2", linked=True)
    assert info["capacity"] == 20 * GiB and info["allocation"] < 2 * MiB
    assert [c["path"] for c in info["backing_chain"]] == [volumes.volume_info(conn, dir_pool, "t20.qcow2")["path"]]


@pytest.mark.guest
def test_running_vm_blocks_resize_and_delete(conn, dir_pool, micro_guest):
    vol = volumes.create_volume(conn, dir_pool, "live.qcow2", "64M")
    guest = micro_guest("live", disks=[{"path": vol["path"], "format": "qcow2"}])
    guest.log.wait_for("KVMKIT-GUEST-READY")
    with pytest.raises(InvalidState, match=f"running VM {guest.name}"):
        volumes.resize_volume(conn, dir_pool, "live.qcow2", "128M")
    with pytest.raises(Conflict, match=guest.name):
        volumes.delete_volume(conn, dir_pool, "live.qcow2")
    with pytest.raises(Conflict, match=guest.name):
        volume_streams.upload(conn, dir_pool, "live.qcow2", vol["path"])
    assert volumes.volume_info(conn, dir_pool, "live.qcow2")["capacity"] == 64 * MiB


@pytest.mark.fast
@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=80))
def test_volume_name_property(name):
    """Every accepted name is a plain file name that stays inside its directory; '/', NUL and '..' never pass."""
    try:
        volumes.check_volume_name(name)
    except InvalidInput:
        return
    assert "/" not in name and "\x00" not in name and ".." not in name and len(name) <= 64
    base = Path("/srv/pool")
    assert (base / name).resolve().parent == base


@pytest.mark.fast
@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-(2**40), max_value=2**40), st.sampled_from(["", "M", "G", "K", "B", "GiB"]))
def test_size_property(number, unit):
    from kvmkit.spec.common import MAX_SIZE_BYTES

    text = f"{number}{unit}"
    factor = {"": 1024**2, "M": 1024**2, "G": 1024**3, "K": 1024, "B": 1, "GiB": 1024**3}[unit]
    if number <= 0 or number * factor > MAX_SIZE_BYTES:  # nothing, or beyond any disk: refused, never overflowing
        with pytest.raises(InvalidInput):
            volumes.parse_size(text)
    else:
        assert volumes.parse_size(text) == number * factor
