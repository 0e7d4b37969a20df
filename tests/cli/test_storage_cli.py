"""``kvmkit pool|volume|template|image`` end to end through the real command, with --json, on qemu:///system."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.storage_fixtures import *  # noqa: F403

KVMKIT = [sys.executable, "-m", "kvmkit"]


@pytest.fixture()
def cli(workdir):
    env = {**os.environ, "KVMKIT_DATA_DIR": str(workdir / "data"), "KVMKIT_CONNECT": "qemu:///system"}

    def run(*args: str, ok: bool = True) -> dict | list:
        res = subprocess.run([*KVMKIT, "--json", *args], capture_output=True, text=True, timeout=120, env=env)
        if ok:
            assert res.returncode == 0, f"kvmkit {' '.join(args)}: {res.stderr}"
        else:
            assert res.returncode != 0, f"kvmkit {' '.join(args)} should have failed: {res.stdout}"
            assert res.stderr.startswith("error: ")
        return json.loads(res.stdout)

    return run


@pytest.fixture()
def pool(cli, conn, prefix, workdir):
    name = f"{prefix}clipool"
    cli("pool", "define", name, "--type", "dir", "--target", str(workdir / "clipool"), "--build", "--start")
    yield name
    try:
        p = conn.storagePoolLookupByName(name)
    except Exception:
        return
    if p.isActive():
        for v in p.listAllVolumes():
            v.delete(0)
        p.destroy()
    p.undefine()


@pytest.mark.guest
def test_pool_commands(cli, pool, prefix):
    info = cli("pool", "info", pool)
    assert info["type"] == "dir" and info["state"] == "running" and info["capacity"] > 0
    assert pool in [p["name"] for p in cli("pool", "list")]
    assert cli("pool", "autostart", pool)["autostart"] is True
    assert cli("pool", "autostart", pool, "--off")["autostart"] is False
    assert cli("pool", "refresh", pool)["volumes"] == 0
    assert cli("pool", "stop", pool)["state"] == "inactive"
    cli("pool", "delete", pool)
    cli("pool", "undefine", pool)
    err = cli("pool", "info", pool, ok=False)
    assert err["code"] == "not_found"
    err = cli("pool", "define", f"{prefix}x", "--type", "nfs4", "--target", "/x", ok=False)
    assert "unknown pool type" in err["error"]


@pytest.mark.guest
def test_volume_commands(cli, pool, workdir):
    vol = cli("volume", "create", pool, "a.qcow2", "--size", "1G")
    assert vol["format"] == "qcow2" and vol["capacity"] == 1024**3
    assert cli("volume", "create", pool, "f.raw", "--size", "8M", "--format", "raw", "--preallocation",
               "full")["allocation"] >= 8 * 1024**2
    linked = cli("volume", "clone", pool, "a.qcow2", "b.qcow2", "--linked")
    assert linked["backing_chain"][0]["path"] == vol["path"]
    assert cli("volume", "clone", pool, "a.qcow2", "c.qcow2")["backing_chain"] == []
    assert cli("volume", "resize", pool, "c.qcow2", "2G")["capacity"] == 2 * 1024**3
    assert "allow-shrink" in cli("volume", "resize", pool, "c.qcow2", "1G", ok=False)["hint"]
    assert cli("volume", "wipe", pool, "f.raw")["wiped"] is True
    src = workdir / "payload.raw"
    src.write_bytes(os.urandom(3 * 1024**2))
    up = cli("volume", "upload", pool, "up.raw", str(src), "--format", "raw")
    assert up["uploaded_bytes"] == 3 * 1024**2
    out = workdir / "back.raw"
    cli("volume", "download", pool, "up.raw", str(out))
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()
    names = {v["name"] for v in cli("volume", "list", pool)}
    assert names == {"a.qcow2", "b.qcow2", "c.qcow2", "f.raw", "up.raw"}
    assert "backing file of b.qcow2" in cli("volume", "delete", pool, "a.qcow2", ok=False)["error"]
    cli("volume", "delete", pool, "b.qcow2")
    cli("volume", "delete", pool, "a.qcow2")
    for bad in ("../x", "a/b"):
        assert cli("volume", "create", pool, bad, "--size", "1G", ok=False)["code"] == "invalid"
    assert "positive" in cli("volume", "create", pool, "z", "--size", "0", ok=False)["error"]
    assert "unknown volume format" in cli("volume", "create", pool, "z", "--size", "1G", "--format", "vdi",
                                          ok=False)["error"]


@pytest.mark.guest
def test_template_commands(cli, pool, prefix):
    cli("volume", "create", pool, "base.qcow2", "--size", "20G")
    t = cli("template", "mark", pool, "base.qcow2", "--name", f"{prefix}tpl")
    assert t["name"] == f"{prefix}tpl"
    assert [x["name"] for x in cli("template", "list")] == [f"{prefix}tpl"]
    made = cli("template", "provision", f"{prefix}tpl", "vm1.qcow2")
    assert made["linked"] is True and Path(made["path"]).name == "vm1.qcow2"
    assert cli("template", "provision", f"{prefix}tpl", "vm2.qcow2", "--full-clone")["linked"] is False
    cli("template", "unmark", f"{prefix}tpl")
    assert cli("template", "list") == []


@pytest.mark.guest
def test_image_info_and_convert(cli, workdir):
    raw = workdir / "img.raw"
    raw.write_bytes(os.urandom(2 * 1024**2))
    info = cli("image", "info", str(raw))
    assert info["format"] == "raw" and info["virtual_size"] == 2 * 1024**2
    res = cli("image", "convert", str(raw), str(workdir / "img.qcow2"), "--format", "qcow2")
    assert res["format"] == "qcow2" and res["old_format"] == "raw"
    assert cli("image", "info", str(workdir / "img.qcow2"))["format"] == "qcow2"
    assert "unknown image format" in cli("image", "convert", str(raw), str(workdir / "x"), "--format", "vmdk",
                                         ok=False)["error"]
    assert cli("image", "info", str(workdir / "missing.img"), ok=False)["code"] == "not_found"


@pytest.mark.fast
def test_help_of_storage_groups():
    for group in ("pool", "volume", "template", "image"):
        res = subprocess.run([*KVMKIT, group, "--help"], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0 and "Usage" in res.stdout
    res = subprocess.run([*KVMKIT, "image", "--help"], capture_output=True, text=True, timeout=60)
    assert "convert" in res.stdout and "info" in res.stdout and "build" in res.stdout


@pytest.mark.guest
def test_image_convert_vm_disk(cli, micro_guest, workdir, conn):
    raw = workdir / "vmdisk.raw"
    raw.write_bytes(b"\0" * 1024**2)
    guest = micro_guest("cliconv", start=False, disks=[{"path": str(raw), "format": "raw"}])
    new = workdir / "vmdisk.qcow2"
    res = cli("image", "convert", str(raw), str(new), "--format", "qcow2", "--vm", guest.name)
    assert res["vm"] == guest.name and res["new"] == str(new)
    xml = conn.lookupByName(guest.name).XMLDesc(0)
    assert f"file='{new}'" in xml and "type='qcow2'" in xml
    err = cli("image", "convert", str(raw), str(workdir / "x.qcow2"), "--format", "qcow2", "--vm", guest.name,
              ok=False)
    assert "has no disk" in err["error"] and not (workdir / "x.qcow2").exists()


@pytest.mark.guest
def test_pool_define_rolls_back_when_a_step_fails(cli, conn, prefix, loop_device, workdir):
    dev = loop_device(16)
    subprocess.run(["mkfs.ext4", "-q", dev], check=True)  # build must refuse to format over it
    name = f"{prefix}rollback"
    err = cli("pool", "define", name, "--type", "fs", "--source-dev", dev, "--target", str(workdir / "rb"),
              "--build", "--start", ok=False)
    assert err["error"]
    assert name not in [p.name() for p in conn.listAllStoragePools()]
