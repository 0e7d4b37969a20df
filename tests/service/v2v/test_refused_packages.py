"""Bad packages and disks are refused by ``vm import`` with an error naming what is wrong and how to fix it,
and nothing is left behind (no volume, no domain, no file). Small crafted files, libvirt's test driver (the
refusals come before anything would be made; the free-space check reads the test pool's numbers)."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

import libvirt
import pytest

from kvmkit.errors import InvalidInput, KvmkitError
from kvmkit.service.v2v.importer import import_vm
from kvmkit.service.v2v.package import open_source
from kvmkit.spec.vm_import import parse_import
from tests.service.v2v.packages import manifest, ovf_xml, write_ova

pytestmark = pytest.mark.fast
MIB = 1024**2
POOL = "default-pool"   # test:///default's pool


def qimg(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture()
def vmdk(tmp_path: Path) -> Path:
    raw = tmp_path / "src.raw"
    with raw.open("wb") as fh:
        fh.truncate(4 * MIB)
        fh.write(b"kvmkit test disk")
    out = tmp_path / "disk1.vmdk"
    qimg("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw), str(out))
    raw.unlink()
    return out


def state(conn: libvirt.virConnect, tmp_path: Path) -> tuple[list[str], list[str], list[str]]:
    pool = conn.storagePoolLookupByName(POOL)
    return (sorted(d.name() for d in conn.listAllDomains()), sorted(v.name() for v in pool.listAllVolumes()),
            sorted(str(p) for p in tmp_path.rglob("*")))


def refused(conn: libvirt.virConnect, tmp_path: Path, source: Path, match: str, **spec: object) -> KvmkitError:
    before = state(conn, tmp_path)
    with pytest.raises(KvmkitError, match=match) as err:
        import_vm(conn, parse_import({"source": {"path": str(source)}, "pool": POOL, **spec}))
    assert err.value.hint, "every refusal says how to fix it"
    assert state(conn, tmp_path) == before, "a refused import leaves nothing behind"
    return err.value


def ova(tmp_path: Path, disk: Path, name: str = "pkg.ova", href: str | None = None, **kw: object) -> Path:
    ovf = ovf_xml("kt-imp", [(href or disk.name, 4 * MIB)])
    return write_ova(tmp_path / name, [("vm.ovf", ovf), (disk.name, disk)], **kw)  # type: ignore[arg-type]


def test_a_good_package_passes_the_checks(tmp_path: Path, vmdk: Path) -> None:
    ovf = ovf_xml("kt-good", [(vmdk.name, 4 * MIB)], vcpus=3, memory_mib=1536, nics=2, firmware="efi")
    path = write_ova(tmp_path / "good.ova", [("good.ovf", ovf), ("good.mf", manifest({"good.ovf": ovf,
                                                                                      vmdk.name: vmdk})),
                                             (vmdk.name, vmdk)])
    pkg = open_source(path)
    assert pkg.kind == "ova" and pkg.manifest == "checked"
    assert (pkg.system.name, pkg.system.vcpus, pkg.system.memory_mib, len(pkg.system.nics)) == ("kt-good", 3, 1536, 2)
    assert pkg.system.firmware == "uefi" and pkg.system.os_type == "debian11_64Guest"
    assert [(d.format, d.size) for d in pkg.disks] == [("vmdk", vmdk.stat().st_size)]
    assert pkg.disks[0].offset > 0 and pkg.disks[0].qemu_source().startswith("json:")


def test_truncated_ova_is_refused(test_conn, tmp_path: Path, vmdk: Path) -> None:
    path = ova(tmp_path, vmdk)
    data = path.read_bytes()
    cut = tmp_path / "cut.ova"
    cut.write_bytes(data[: len(data) // 2])          # the tar ends inside the disk
    refused(test_conn, tmp_path, cut, "truncated: disk1.vmdk needs")
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    short = tmp_path / "short.ova"
    short.write_bytes(data[:end])  # every member whole, but the archive stops before tar's end-of-archive blocks
    err = refused(test_conn, tmp_path, short, "truncated: the tar stops without its end-of-archive marker")
    assert "copy the whole package again" in (err.hint or "")


def test_disks_named_outside_the_package_are_refused(test_conn, tmp_path: Path, vmdk: Path) -> None:
    for href in ("../../etc/passwd", "/etc/passwd", "sub/disk1.vmdk"):
        path = ova(tmp_path, vmdk, name="out.ova", href=href)
        refused(test_conn, tmp_path, path, "not a plain file name inside the package")
    missing = ova(tmp_path, vmdk, name="missing.ova", href="other.vmdk")
    refused(test_conn, tmp_path, missing, "does not hold")


def test_links_and_odd_members_in_the_tar_are_refused(test_conn, tmp_path: Path, vmdk: Path) -> None:
    ovf = ovf_xml("kt-imp", [(vmdk.name, 4 * MIB)])
    sym = write_ova(tmp_path / "sym.ova", [("vm.ovf", ovf), (vmdk.name, b"")], kinds={vmdk.name: "sym:/etc/shadow"})
    refused(test_conn, tmp_path, sym, "is a symbolic link")
    hard = write_ova(tmp_path / "hard.ova", [("vm.ovf", ovf), (vmdk.name, b"")], kinds={vmdk.name: "hard:/etc/shadow"})
    refused(test_conn, tmp_path, hard, "is a hard link")
    dots = write_ova(tmp_path / "dots.ova", [("vm.ovf", ovf), ("../evil", b"x")])
    refused(test_conn, tmp_path, dots, "not a plain file name")
    late = write_ova(tmp_path / "late.ova", [(vmdk.name, vmdk), ("vm.ovf", ovf)])
    refused(test_conn, tmp_path, late, "first file of an OVA must be its .ovf")


def test_ovf_with_entities_is_refused(test_conn, tmp_path: Path, vmdk: Path) -> None:
    laughs = (b'<?xml version="1.0"?>\n<!DOCTYPE Envelope [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;">'
              b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;">]>\n'
              b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><VirtualSystem>&c;</VirtualSystem></Envelope>')
    path = write_ova(tmp_path / "laughs.ova", [("vm.ovf", laughs), (vmdk.name, vmdk)])
    err = refused(test_conn, tmp_path, path, "DOCTYPE or XML entities")
    assert "billion laughs" in err.message
    plain = tmp_path / "laughs.ovf"
    plain.write_bytes(laughs)
    refused(test_conn, tmp_path, plain, "DOCTYPE or XML entities")
    external = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/shadow">]>'
                b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&e;</Envelope>')
    (tmp_path / "ext.ovf").write_bytes(external)
    refused(test_conn, tmp_path, tmp_path / "ext.ovf", "DOCTYPE or XML entities")


def test_a_backing_file_or_data_file_pointing_at_the_host_is_refused(test_conn, tmp_path: Path) -> None:
    top = tmp_path / "top.qcow2"
    qimg("create", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(top), "4M")
    err = refused(test_conn, tmp_path, top, "names a backing file \\(/etc/hostname\\)")
    assert "flatten" in (err.hint or "")
    in_ova = write_ova(tmp_path / "backing.ova", [("vm.ovf", ovf_xml("kt-b", [("top.qcow2", 4 * MIB)],
                                                                      disk_format="qcow2")), ("top.qcow2", top)])
    refused(test_conn, tmp_path, in_ova, "names a backing file")
    data = tmp_path / "data.qcow2"
    qimg("create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'external.raw'}", str(data), "4M")
    (tmp_path / "external.raw").unlink()
    refused(test_conn, tmp_path, data, "external data file|data file")
    base, child = tmp_path / "base.vmdk", tmp_path / "child.vmdk"  # a VMDK whose parentFileNameHint is a host file
    qimg("create", "-f", "vmdk", str(base), "4M")
    qimg("create", "-f", "vmdk", "-b", str(base), "-F", "vmdk", str(child))
    refused(test_conn, tmp_path, child, "names a backing file")


def test_vmdk_descriptors_naming_other_files_are_refused(test_conn, tmp_path: Path) -> None:
    desc = tmp_path / "desc.vmdk"
    desc.write_text('# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
                    'RW 8 FLAT "/etc/shadow" 0\n')
    err = refused(test_conn, tmp_path, desc, "VMDK descriptor")
    assert "single-file VMDK" in (err.hint or "")


def test_unknown_formats_and_mislabelled_disks_are_refused(test_conn, tmp_path: Path, vmdk: Path) -> None:
    gz = tmp_path / "disk.img.gz"
    gz.write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 1020)
    refused(test_conn, tmp_path, gz, "gzip-compressed data")
    odd = tmp_path / "notes.txt"
    odd.write_bytes(b"not a disk\n" * 7)
    refused(test_conn, tmp_path, odd, "not a whole number of 512-byte sectors")
    qcow1 = tmp_path / "old.qcow"
    qimg("create", "-f", "qcow", str(qcow1), "4M")
    refused(test_conn, tmp_path, qcow1, "qcow \\(version 1\\)")
    raw = tmp_path / "raw.img"
    raw.write_bytes(b"\0" * MIB)
    path = write_ova(tmp_path / "label.ova", [("vm.ovf", ovf_xml("kt-l", [("raw.img", MIB)])), ("raw.img", raw)])
    refused(test_conn, tmp_path, path, "the descriptor says vmdk, but the file is raw")


def test_a_damaged_manifest_is_refused(test_conn, tmp_path: Path, vmdk: Path) -> None:
    ovf = ovf_xml("kt-imp", [(vmdk.name, 4 * MIB)])
    bad = manifest({"vm.ovf": ovf, vmdk.name: b"something else"})
    path = write_ova(tmp_path / "mf.ova", [("vm.ovf", ovf), ("vm.mf", bad), (vmdk.name, vmdk)])
    refused(test_conn, tmp_path, path, "does not match its SHA256 digest")


def test_a_disk_larger_than_the_pool_free_space_is_refused(test_conn, tmp_path: Path) -> None:
    free = test_conn.storagePoolLookupByName(POOL).info()[3]
    big = tmp_path / "big.qcow2"  # sparse: a few hundred KiB that may grow to more than the pool has
    qimg("create", "-f", "qcow2", str(big), str(free + 64 * 1024**3))
    err = refused(test_conn, tmp_path, big, "disks are .* but pool 'default-pool' has .* free")
    assert "free space" in (err.hint or "")
    in_ova = write_ova(tmp_path / "big.ova", [("vm.ovf", ovf_xml("kt-big", [("big.qcow2", free + 64 * 1024**3)],
                                                                  disk_format="qcow2")), ("big.qcow2", big)])
    refused(test_conn, tmp_path, in_ova, "big.qcow2 in big.ova alone is")


def test_ovf_next_to_its_disks_refuses_symlinked_disks(test_conn, tmp_path: Path, vmdk: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "vm.ovf").write_bytes(ovf_xml("kt-o", [("disk1.vmdk", 4 * MIB)]))
    os.symlink(vmdk, pkg / "disk1.vmdk")
    refused(test_conn, tmp_path, pkg / "vm.ovf", "symbolic link")
    (pkg / "disk1.vmdk").unlink()
    os.link(vmdk, pkg / "disk1.vmdk")
    assert open_source(pkg / "vm.ovf").disks[0].format == "vmdk"


def test_spec_validation() -> None:
    with pytest.raises(InvalidInput, match="either path=FILE or pool=P"):
        parse_import({"source": {}})
    with pytest.raises(InvalidInput, match="not absolute"):
        parse_import({"source": {"path": "x.ova"}})
    with pytest.raises(InvalidInput, match="via"):
        parse_import({"source": {"path": "/x.ova"}, "via": "vmware"})
    spec = parse_import({"source": {"volume": "web.ova"}, "memory_mib": "2G"})
    assert (spec.source.pool, spec.memory_mib, spec.network, spec.via) == ("default", 2048, "default", "auto")
