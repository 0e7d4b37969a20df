"""Names that try to leave their directory are refused before anything touches the disk.

Service functions that turn a name into a path, each tried with traversal names:
- storage/volumes.py: create_volume, clone_volume (new name), delete/info/resize/wipe (get_volume);
- storage/streams.py: upload (new or existing volume), download (the volume name);
- copies/snapshots.py: create_snapshot (its name becomes overlay and memory file names);
- copies/backup.py + restore.py: a backup's manifest naming files outside the backup directory, and a
  backup whose domain XML would have the restore write the NVRAM file anywhere on the host;
- copies/clone.py and restore.py: the new VM name (it names the new disks).
Run on libvirt's test driver (a dir pool at /default-pool that does not exist on disk: any file made there
would fail loudly), so a refusal is kvmkit's and comes before libvirt is asked.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput, KvmkitError
from kvmkit.images import qemu_img
from kvmkit.service.copies import backup, restore, snapshots
from kvmkit.service.copies.clone import clone_vm
from kvmkit.service.storage import streams, volumes

pytestmark = pytest.mark.fast
POOL = "default-pool"
TRAVERSAL = ["../escape", "../../etc/passwd", "/etc/passwd", "a/../../b", "..", ".", "sub/dir", "x\x00y",
             "..\\..\\win", "%2e%2e%2fetc", "~root", "-rf", ""]


@pytest.mark.parametrize("name", TRAVERSAL)
def test_volume_names(test_conn, name: str, tmp_path) -> None:
    for call in (lambda: volumes.create_volume(test_conn, POOL, name, "1M", fmt="raw"),
                 lambda: volumes.delete_volume(test_conn, POOL, name),
                 lambda: volumes.volume_info(test_conn, POOL, name),
                 lambda: volumes.resize_volume(test_conn, POOL, name, "2M"),
                 lambda: volumes.wipe_volume(test_conn, POOL, name)):
        with pytest.raises(KvmkitError) as err:
            call()
        if "/" in name or name in ("..", ".", "", "x\x00y"):  # a path, not a missing file
            assert isinstance(err.value, InvalidInput), (name, err.value)
    base = f"base-{TRAVERSAL.index(name)}.img"  # the test driver's state outlives one test
    volumes.create_volume(test_conn, POOL, base, "1M", fmt="raw")
    try:
        with pytest.raises(InvalidInput):
            volumes.clone_volume(test_conn, POOL, base, name)
    finally:
        volumes.delete_volume(test_conn, POOL, base)


@pytest.mark.parametrize("name", TRAVERSAL)
def test_upload_and_download_names(test_conn, name: str, tmp_path) -> None:
    src = tmp_path / "image.raw"
    src.write_bytes(b"\0" * 4096)
    with pytest.raises(KvmkitError) as err:
        streams.upload(test_conn, POOL, name, src, fmt="raw")
    assert isinstance(err.value, InvalidInput), (name, err.value)
    with pytest.raises(KvmkitError):
        streams.download(test_conn, POOL, name, tmp_path / "out.raw")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.raw"]  # no .part left either


@pytest.mark.parametrize("name", [n for n in TRAVERSAL if n])  # no name: kvmkit names it snap-<time>
def test_snapshot_names(test_conn, name: str) -> None:
    before = [s.getName() for s in test_conn.lookupByName("test").listAllSnapshots(0)]
    with pytest.raises(InvalidInput):
        snapshots.create_snapshot(test_conn, "test", name)
    with pytest.raises(InvalidInput):
        snapshots.create_snapshot(test_conn, "test", name, disk_only=True)
    assert [s.getName() for s in test_conn.lookupByName("test").listAllSnapshots(0)] == before


@pytest.mark.parametrize("name", TRAVERSAL)
def test_clone_and_restore_vm_names(test_conn, name: str, tmp_path) -> None:
    with pytest.raises(InvalidInput):
        clone_vm(test_conn, "test", name)
    if name:  # no name: restore under the backup's own name
        bdir = _backup_dir(tmp_path, {})
        with pytest.raises(InvalidInput):
            restore.restore_vm(test_conn, bdir, name=name, pool=POOL)


def _backup_dir(tmp_path: Path, change: dict[str, object], domain_xml: str | None = None) -> Path:
    """A well-formed kvmkit backup (one disk), with manifest fields replaced by ``change``."""
    base = tmp_path / "bk"
    base.mkdir(exist_ok=True)
    root = etree.Element("domain", type="test")
    etree.SubElement(root, "name").text = "restored"
    etree.SubElement(root, "memory").text = "65536"
    os_el = etree.SubElement(root, "os")
    etree.SubElement(os_el, "type").text = "hvm"
    disk = etree.SubElement(etree.SubElement(root, "devices"), "disk", type="file", device="disk")
    etree.SubElement(disk, "driver", name="qemu", type="qcow2")
    etree.SubElement(disk, "source", file="/nowhere/vda.qcow2")
    etree.SubElement(disk, "target", dev="vda")
    (base / "domain.xml").write_text(domain_xml or etree.tostring(root, encoding="unicode"))
    qemu_img.create(base / "vda.qcow2", "qcow2", 1024 * 1024)
    (base / "nvram.fd").write_bytes(b"\0" * 64)
    files = ["domain.xml", "vda.qcow2", "nvram.fd"]
    manifest = {"format": backup.FORMAT, "version": backup.VERSION, "vm": "restored", "domain_xml": "domain.xml",
                "nvram": None, "disks": [{"target": "vda", "file": "vda.qcow2", "original_format": "qcow2"}],
                "sha256": {f: backup.sha256(base / f) for f in files}}
    manifest.update(change)
    (base / "manifest.json").write_text(json.dumps(manifest))
    return base


@pytest.mark.parametrize("where", ["domain_xml", "disk", "sha256", "nvram"])
@pytest.mark.parametrize("name", ["../escape", "../../etc/passwd", "/etc/passwd", "sub/x", ".."])
def test_backup_manifest_naming_files_outside_the_backup(tmp_path, test_conn, where: str, name: str) -> None:
    ok = _backup_dir(tmp_path, {})
    manifest = json.loads((ok / "manifest.json").read_text())
    if where == "domain_xml":
        manifest["domain_xml"] = name
    elif where == "disk":
        manifest["disks"][0]["file"] = name
    elif where == "sha256":
        manifest["sha256"][name] = "0" * 64
    else:
        manifest["nvram"] = name
    (ok / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInput, match="unsafe file"):
        backup.read_manifest(ok)
    with pytest.raises(InvalidInput, match="unsafe file"):
        restore.restore_vm(test_conn, ok, pool=POOL)


@pytest.mark.parametrize("nvram", ["{tmp}/elsewhere/vars.fd", "/var/lib/libvirt/qemu/nvram/../../../../{tmp}/x",
                                   "/kvmkit-test-no-such-dir/authorized_keys", "relative/vars.fd"])
def test_restore_never_writes_the_nvram_outside_libvirts_nvram_directory(tmp_path, test_conn, nvram: str) -> None:
    """A backup is data from outside: its domain XML must not pick where the restore writes as root (before
    the fix it wrote the backup's NVRAM bytes to any path, e.g. /etc/cron.d/NAME; these paths are harmless)."""
    nvram = nvram.format(tmp=tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "a").mkdir()
    root = etree.fromstring((_backup_dir(tmp_path / "a", {}) / "domain.xml").read_bytes())
    os_el = root.find("os")
    etree.SubElement(os_el, "loader", readonly="yes", type="pflash").text = "/usr/share/OVMF/OVMF_CODE.fd"
    etree.SubElement(os_el, "nvram").text = nvram
    bdir = _backup_dir(tmp_path, {"nvram": "nvram.fd"}, etree.tostring(root, encoding="unicode"))
    with pytest.raises(InvalidInput, match="NVRAM"):
        restore.restore_vm(test_conn, bdir, pool=POOL)
    assert not Path(nvram).exists() or nvram.startswith("relative")
    with pytest.raises(InvalidInput, match="NVRAM"):  # a new name keeps the directory: refused as well
        restore.restore_vm(test_conn, bdir, name="restored2", pool=POOL)
