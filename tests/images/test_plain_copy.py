"""Copies never carry libvirt's security records: kvmkit.images.plain_copy and the micro-guest's --out copy."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from kvmkit.images.plain_copy import copy_file
from tests.support.boot_files import boot_once, describe, leak_records, owner, private_boot_files, records

LIBVIRT_RECORD = {"trusted.libvirt.security.dac": b"+0:+0", "trusted.libvirt.security.ref_dac": b"11",
                  "trusted.libvirt.security.timestamp_dac": b"1796589817"}


def _labelled(path: Path) -> Path:
    path.write_bytes(b"kernel" * 1000)
    path.chmod(0o640)
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    for name, value in LIBVIRT_RECORD.items():
        os.setxattr(path, name, value)
    os.setxattr(path, "user.kvmkit-test", b"kept?")
    return path


@pytest.mark.fast
def test_copy_drops_every_extended_attribute_and_keeps_mode_and_times(tmp_path):
    src = _labelled(tmp_path / "vmlinuz")
    assert records(src)["ref_dac"] == "11"
    shutil.copy2(src, tmp_path / "copy2")  # what kvmkit used: it carries the records
    assert records(tmp_path / "copy2")["ref_dac"] == "11"

    dst = copy_file(src, tmp_path / "copy")
    assert dst.read_bytes() == src.read_bytes()
    assert os.listxattr(dst) == []
    st = dst.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 2_000_000_000

    plain = copy_file(src, tmp_path / "plain", metadata=False)
    assert os.listxattr(plain) == [] and plain.stat().st_mtime_ns != 2_000_000_000


@pytest.mark.fast
def test_copy_over_a_labelled_file_gets_a_new_inode_without_its_records(tmp_path):
    old = _labelled(tmp_path / "initrd.img")
    inode = old.stat().st_ino
    src = tmp_path / "fresh"
    src.write_bytes(b"new")
    copy_file(src, old)
    assert old.read_bytes() == b"new" and old.stat().st_ino != inode
    assert records(old) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "initrd.img"]  # no temporary file left


@pytest.mark.guest
def test_micro_build_out_copies_no_records_and_the_copy_boots(conn, prefix, workdir, micro_image, virt_type,
                                                              monkeypatch):
    """`kvmkit image build micro --out DIR` from a cache whose files carry a stale record (as after the old
    suite): the copies carry none and a VM boots from them. With shutil.copy2 the copies were root's with
    ref_dac=1 and libvirt refused them: 'Setting different DAC user or group ... already in use'."""
    from kvmkit.images import micro

    data = workdir / "data"  # a private data directory: the shared cache is never labelled by this test
    cache = data / "cache" / "micro" / micro_image.key
    boot = private_boot_files(micro_image, cache)
    kernels = data / "cache" / "kernels"
    kernels.mkdir(parents=True)
    tree = micro.fetch_kernel()
    (kernels / tree.version).symlink_to(tree.root)
    manifest = json.loads((Path(micro_image.kernel).parent / "manifest.json").read_text())
    manifest.update(kernel=boot.kernel, initrd=boot.initrd, pvh_kernel=None,
                    pvh_note="not copied for this test")
    (cache / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("KVMKIT_DATA_DIR", str(data))

    leak_records(conn, f"{prefix}leak", boot, workdir, virt_type)
    assert owner(boot.kernel) != (0, 0), "libvirt gave the kernel to the QEMU user and never gave it back"

    out = workdir / "out"
    image = micro.build(out)
    assert image.kernel == str(out / "vmlinuz") and image.initrd == str(out / "initrd.img")
    copies = [image.kernel, image.initrd]
    before = describe(copies)
    boot_once(conn, f"{prefix}copy", type(boot)(image.kernel, image.initrd, image.cmdline), workdir, virt_type)
    assert {p: r for p, (_o, r) in before.items() if r} == {}
    assert {p: r for p, (_o, r) in describe(copies).items() if r} == {}


@pytest.mark.fast
def test_kvmkit_copies_files_only_through_copy_file():
    """One copy helper everywhere: no other copy function of shutil (copy2 and copystat carry extended
    attributes; copyfile over an existing file keeps its inode and with it the old file's records)."""
    root = Path(__file__).resolve().parents[2]
    banned = ("shutil.copy(", "shutil.copy2", "shutil.copyfile", "shutil.copystat", "shutil.copytree",
              "shutil.copyfileobj", "shutil.move", "from shutil import")
    found = []
    for path in sorted([*(root / "src").rglob("*.py"), *(root / "bench").rglob("*.py")]):
        if path.name == "plain_copy.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if any(b in line for b in banned):
                found.append(f"{path.relative_to(root)}:{no}: {line.strip()}")
    assert found == []
