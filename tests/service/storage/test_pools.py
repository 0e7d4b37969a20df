"""Storage pools: XML for every type, lifecycle on test:///default, and real dir, fs and logical pools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, KvmkitError, NotFound
from kvmkit.service.storage import pools, volumes
from tests.service.storage_fixtures import *  # noqa: F403
from tests.service.storage_fixtures import remove_pool, remove_vg

TYPE_ARGS = {
    "dir": {"target": "/var/lib/kvmkit/test/x"},
    "fs": {"target": "/mnt/x", "source_dev": "/dev/loop7"},
    "netfs": {"target": "/mnt/n", "source_host": "nfs.example", "source_path": "/export/vms"},
    "logical": {"source_name": "vg0", "source_dev": "/dev/loop6"},
    "iscsi": {"source_host": "iscsi.example", "source_path": "iqn.2024-01.dev.kvmkit:t1"},
}


@pytest.mark.fast
@pytest.mark.parametrize("ptype", sorted(TYPE_ARGS))
def test_pool_xml_per_type(ptype):
    root = etree.fromstring(pools.pool_xml("p1", ptype, **TYPE_ARGS[ptype]))
    assert root.get("type") == ptype
    assert root.findtext("name") == "p1"
    assert root.findtext("target/path")
    if ptype == "netfs":
        assert root.find("source/host").get("name") == "nfs.example"
        assert root.find("source/dir").get("path") == "/export/vms"
        assert root.find("source/format").get("type") == "nfs"
    if ptype == "logical":
        assert root.findtext("source/name") == "vg0"
        assert root.findtext("target/path") == "/dev/vg0"
    if ptype == "iscsi":
        assert root.find("source/device").get("path") == "iqn.2024-01.dev.kvmkit:t1"


@pytest.mark.fast
@pytest.mark.parametrize("ptype", sorted(TYPE_ARGS))
def test_lifecycle_on_test_driver(test_conn, ptype):
    name = f"kt-fast-{ptype}"
    info = pools.define_pool(test_conn, name, ptype, **TYPE_ARGS[ptype])
    assert info["state"] == "inactive" and info["type"] == ptype
    assert pools.start_pool(test_conn, name)["state"] == "running"
    assert pools.set_autostart(test_conn, name, True)["autostart"] is True
    assert pools.refresh_pool(test_conn, name)["state"] == "running"
    assert name in [p["name"] for p in pools.list_pools(test_conn)]
    with pytest.raises(InvalidState, match="running"):
        pools.undefine_pool(test_conn, name)
    assert pools.stop_pool(test_conn, name)["state"] == "inactive"
    pools.undefine_pool(test_conn, name)
    with pytest.raises(NotFound, match=name):
        pools.pool_info(test_conn, name)


@pytest.mark.fast
@pytest.mark.parametrize(("name", "ptype", "kwargs", "message"), [
    ("p/1", "dir", {"target": "/x"}, "invalid pool name"),
    ("p1", "zfs2", {"target": "/x"}, "unknown pool type"),
    ("p1", "dir", {}, "needs --target"),
    ("p1", "dir", {"target": "relative/dir"}, "absolute"),
    ("p1", "fs", {"target": "/x"}, "needs --source-dev"),
    ("p1", "netfs", {"target": "/x", "source_host": "h"}, "needs --source-path"),
    ("p1", "iscsi", {"source_path": "iqn.x"}, "needs --source-host"),
])
def test_define_bad_input(test_conn, name, ptype, kwargs, message):
    before = {p.name() for p in test_conn.listAllStoragePools()}
    with pytest.raises(InvalidInput, match=message):
        pools.define_pool(test_conn, name, ptype, **kwargs)
    assert {p.name() for p in test_conn.listAllStoragePools()} == before


@pytest.mark.fast
def test_iscsi_target_iqn_as_source_dev_like_virsh():
    root = etree.fromstring(pools.pool_xml("s1", "iscsi", source_host="192.168.2.20",
                                           source_dev="iqn.2017-10.com.cloud.www:storage001"))
    assert root.find("source/device").get("path") == "iqn.2017-10.com.cloud.www:storage001"
    assert root.findtext("target/path") == "/dev/disk/by-path"


@pytest.mark.fast
def test_define_twice_conflicts(test_conn):
    pools.define_pool(test_conn, "kt-twice", "dir", target="/tmp/kt-twice")
    with pytest.raises(Conflict, match="exists already"):
        pools.define_pool(test_conn, "kt-twice", "dir", target="/tmp/kt-twice")


@pytest.mark.guest
def test_dir_pool_lifecycle(conn, prefix, workdir):
    name, target = f"{prefix}dirpool", workdir / "dirpool"
    try:
        pools.define_pool(conn, name, "dir", target=str(target))
        pools.build_pool(conn, name)
        assert target.is_dir()
        info = pools.start_pool(conn, name)
        assert info["state"] == "running" and info["capacity"] > 0 and info["available"] > 0
        assert pools.set_autostart(conn, name, True)["autostart"] is True
        assert pools.set_autostart(conn, name, False)["autostart"] is False
        (target / "outside.raw").write_bytes(b"\0" * 4096)
        assert pools.refresh_pool(conn, name)["volumes"] == 1
        listed = {p["name"]: p for p in pools.list_pools(conn)}
        assert listed[name]["allocation"] <= listed[name]["capacity"]
        with pytest.raises(InvalidState, match="stop it first"):
            pools.delete_pool(conn, name)
        (target / "outside.raw").unlink()
        assert pools.stop_pool(conn, name)["state"] == "inactive"
        pools.delete_pool(conn, name)
        assert not target.exists()
        pools.undefine_pool(conn, name)
        assert name not in [p["name"] for p in pools.list_pools(conn)]
    finally:
        remove_pool(conn, name)


@pytest.mark.guest
def test_fs_pool_on_loop_device(conn, prefix, workdir, loop_device):
    dev = loop_device(64)
    name, target = f"{prefix}fspool", workdir / "fsmnt"
    try:
        info = pools.define_pool(conn, name, "fs", target=str(target), source_dev=dev)
        assert info["source"]["device"] == dev
        pools.build_pool(conn, name)  # mkfs.ext4 on the loop device
        assert "ext4" in subprocess.run(["blkid", "-o", "value", "-s", "TYPE", dev], capture_output=True,
                                        text=True).stdout
        info = pools.start_pool(conn, name)  # mounts it
        assert str(target) in Path("/proc/self/mounts").read_text()
        assert 40 * 1024**2 < info["capacity"] <= 64 * 1024**2
        vol = volumes.create_volume(conn, name, "d.qcow2", "16M")
        assert Path(vol["path"]).parent == target
        volumes.delete_volume(conn, name, "d.qcow2")
        pools.stop_pool(conn, name)
        assert str(target) not in Path("/proc/self/mounts").read_text()
        with pytest.raises(KvmkitError, match=r"(?i)format|file ?system"):  # never mkfs over a file system
            pools.build_pool(conn, name)
        pools.delete_pool(conn, name)
        pools.undefine_pool(conn, name)
    finally:
        remove_pool(conn, name)


@pytest.mark.guest
def test_logical_pool_on_loop_backed_vg(conn, prefix, loop_device):
    """vgcreate/vgchange/vgremove through libvirt. (This host's kernel has no device-mapper, so no LVs.)"""
    dev = loop_device(128)
    name, vg = f"{prefix}lvm", f"{prefix}vg"
    try:
        pools.define_pool(conn, name, "logical", source_dev=dev, source_name=vg)
        pools.build_pool(conn, name)
        assert vg in subprocess.run(["vgs", "--noheadings", "-o", "vg_name"], capture_output=True, text=True).stdout
        info = pools.start_pool(conn, name)
        assert info["state"] == "running" and info["target"] == f"/dev/{vg}"
        assert 100 * 1024**2 < info["capacity"] <= 128 * 1024**2
        assert pools.refresh_pool(conn, name)["volumes"] == 0
        pools.stop_pool(conn, name)
        pools.delete_pool(conn, name)
        assert vg not in subprocess.run(["vgs", "--noheadings", "-o", "vg_name"], capture_output=True,
                                        text=True).stdout
        pools.undefine_pool(conn, name)
    finally:
        remove_pool(conn, name)
        remove_vg(vg)


@pytest.mark.guest
def test_delete_pool_with_volume_in_use_names_the_vm(conn, prefix, dir_pool, micro_guest):
    vol = volumes.create_volume(conn, dir_pool, "used.qcow2", "64M")
    guest = micro_guest("user", start=False, disks=[{"path": vol["path"], "format": "qcow2"}])
    with pytest.raises(Conflict, match=guest.name):
        pools.delete_pool(conn, dir_pool)
    assert pools.pool_info(conn, dir_pool)["state"] == "running"
    pools.stop_pool(conn, dir_pool)
    with pytest.raises(Conflict, match=guest.name):  # stopped: found through the VMs' disk paths
        pools.delete_pool(conn, dir_pool)
    assert Path(vol["path"]).exists()
