"""create_vm on qemu:///system: checks before acting, rollback on failure, new volumes, real boots."""

from __future__ import annotations

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, KvmkitError, NotFound
from kvmkit.service.vms.create import create_vm
from kvmkit.xml.domain import validate_with_schema
from tests.support.serial import SerialLog


def leftovers(conn: libvirt.virConnect, prefix: str) -> list[str]:
    found = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
    pool = conn.storagePoolLookupByName("default")
    pool.refresh(0)
    found += [v.name() for v in pool.listAllVolumes() if v.name().startswith(prefix)]
    return found


def micro(name: str, **extra):
    return {"name": name, "micro": True, "memory_mib": "256M", "nics": [], **extra}


@pytest.mark.fast
@pytest.mark.parametrize(("change", "match"), [
    ({"name": "{p}a/b"}, "invalid name"),
    ({"name": "<x>"}, "invalid name"),
    ({"name": ""}, "invalid name"),
    ({"name": "{p}" + "x" * 60}, "invalid name"),
    ({"memory_mib": "1G", "max_memory_mib": "512M"}, "above max memory"),
    ({"vcpus": 3, "max_vcpus": 2}, "above max vcpus"),
    ({"vcpus": 2, "max_vcpus": 4, "sockets": 3}, "does not match max vcpus 4"),
    ({"memory_mib": "12Q"}, "'12Q' is not a size"),
    ({"disks": [{"size": "12Q"}]}, "'12Q' is not a size"),
])
def test_bad_spec_leaves_nothing(conn, prefix, change, match):
    data = micro(f"{prefix}vm", disks=[{"size": "16M"}])
    data.update({k: v.format(p=prefix) if isinstance(v, str) else v for k, v in change.items()})
    with pytest.raises(InvalidInput, match=match) as err:
        create_vm(conn, data)
    assert err.value.hint
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
@pytest.mark.parametrize(("change", "match"), [
    ({"disks": [{"size": "16M"}, {"device": "cdrom", "path": "/var/lib/kvmkit/none.iso"}]},
     "ISO /var/lib/kvmkit/none.iso does not exist"),
    ({"disks": [{"size": "16M"}, {"path": "/var/lib/kvmkit/none.qcow2"}]}, "disk /var/lib/kvmkit/none.qcow2"),
    ({"micro": False, "kernel": "/var/lib/kvmkit/none-vmlinuz"}, "kernel /var/lib/kvmkit/none-vmlinuz"),
    ({"disks": [{"size": "16M", "pool": "kt-no-such-pool"}]}, "storage pool 'kt-no-such-pool' not found"),
    ({"disks": [{"volume": "kt-no-such-vol"}]}, "volume 'kt-no-such-vol' not found"),
    ({"nics": [{"source": "kt-no-such-net"}], "disks": [{"size": "16M"}]}, "network 'kt-no-such-net' not found"),
    ({"nics": [{"type": "bridge", "source": "ktnobr0"}], "disks": [{"size": "16M"}]}, "host bridge 'ktnobr0' not"),
])
def test_missing_paths_leave_nothing(conn, prefix, change, match):
    with pytest.raises(NotFound, match=match) as err:
        create_vm(conn, {**micro(f"{prefix}vm"), **change})
    assert err.value.hint
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
def test_duplicate_name_is_refused(conn, prefix):
    first = create_vm(conn, micro(f"{prefix}dup", disks=[{"size": "16M"}]))
    assert first["volumes_created"] == [f"{prefix}dup-disk0.qcow2"]
    with pytest.raises(Conflict, match=f"a VM named '{prefix}dup' already exists"):
        create_vm(conn, micro(f"{prefix}dup", disks=[{"size": "16M"}]))
    assert sorted(leftovers(conn, prefix)) == sorted([f"{prefix}dup", f"{prefix}dup-disk0.qcow2"])
    with pytest.raises(Conflict, match=f"UUID {first['uuid']} is already used by VM '{prefix}dup'"):
        create_vm(conn, micro(f"{prefix}other", uuid=first["uuid"]))


@pytest.mark.fast
def test_duplicate_mac_is_refused_naming_the_domain(conn, prefix, micro_guest):
    from kvmkit.service.vms.macs import generate_mac

    mac = generate_mac(conn)
    owner = micro_guest("owner", start=False, networks=[{"network": "default", "mac": mac}])
    with pytest.raises(Conflict, match=f"MAC {mac} is already used by domain '{owner.name}'"):
        create_vm(conn, micro(f"{prefix}vm", disks=[{"size": "16M"}],
                              nics=[{"source": "default", "mac": mac}]))
    assert leftovers(conn, prefix) == [owner.name]


@pytest.mark.fast
def test_print_xml_defines_nothing(conn, prefix):
    out = create_vm(conn, micro(f"{prefix}px", disks=[{"size": "16M"}], nics=[{"source": "default"}],
                                graphics={"type": "vnc"}), print_xml=True)
    assert out["defined"] is False
    assert validate_with_schema(out["xml"]) == []
    root = etree.fromstring(out["xml"].encode())
    assert root.find("devices/disk/source").get("file").endswith(f"/{prefix}px-disk0.qcow2")
    assert root.find("devices/disk/driver").get("type") == "qcow2"
    assert root.find("devices/interface/mac").get("address").startswith("52:54:00:")
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
def test_define_failure_removes_created_volume(conn, prefix):
    with pytest.raises(KvmkitError, match=f"defining VM {prefix}bad"):
        create_vm(conn, micro(f"{prefix}bad", machine="no-such-machine", disks=[{"size": "16M"}]))
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
def test_import_existing_disk_and_iso(conn, prefix, workdir):
    from kvmkit.images import qemu_img

    disk = workdir / "imported.qcow2"
    qemu_img.create(disk, "qcow2", 32 * 1024**2)
    iso = workdir / "install.iso"
    iso.write_bytes(b"\0" * 4096)
    out = create_vm(conn, micro(f"{prefix}imp", disks=[{"path": str(disk)}, {"device": "cdrom", "path": str(iso)}]))
    root = etree.fromstring(conn.lookupByName(out["name"]).XMLDesc(0).encode())
    drivers = [d.get("type") for d in root.iterfind("devices/disk/driver")]
    assert drivers == ["qcow2", "raw"]  # detected from the header, then written explicitly
    assert out["volumes_created"] == []


@pytest.mark.guest
def test_new_qcow2_disk_in_default_pool_and_boot(conn, prefix):
    out = create_vm(conn, micro(f"{prefix}disk", disks=[{"size": "64M", "format": "qcow2"}],
                                nics=[{"source": "default"}]), start=True)
    vol = conn.storagePoolLookupByName("default").storageVolLookupByName(f"{prefix}disk-disk0.qcow2")
    vol_xml = etree.fromstring(vol.XMLDesc(0).encode())
    assert vol_xml.find("target/format").get("type") == "qcow2"
    assert int(vol_xml.findtext("capacity")) == 64 * 1024**2
    assert out["disks"] == [vol.path()] and out["serial_log"] == f"/var/log/kvmkit/{prefix}disk.serial.log"
    assert out["virt_type"] in ("kvm", "qemu") and out["virt_type_reason"]
    dom = conn.lookupByName(out["name"])
    assert dom.isActive()
    SerialLog(out["serial_log"]).wait_for("KVMKIT-GUEST-READY")


@pytest.mark.guest
def test_start_failure_rolls_back_domain_and_volume(conn, prefix):
    net = etree.Element("network")
    etree.SubElement(net, "name").text = f"{prefix}down"
    conn.networkDefineXML(etree.tostring(net, encoding="unicode"))  # defined, never started
    with pytest.raises(KvmkitError, match="starting VM"):
        create_vm(conn, micro(f"{prefix}roll", disks=[{"size": "16M"}], nics=[{"source": f"{prefix}down"}]),
                  start=True)
    assert leftovers(conn, prefix) == []


@pytest.fixture()
def template(conn, prefix):
    """A small qcow2 volume in the default pool marked as template '<prefix>tpl' (unmarked afterwards)."""
    from kvmkit.service.storage import templates
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = f"{prefix}tpl.qcow2"
    etree.SubElement(vol, "capacity", unit="bytes").text = str(32 * 1024**2)
    etree.SubElement(etree.SubElement(vol, "target"), "format", type="qcow2")
    conn.storagePoolLookupByName("default").createXML(etree.tostring(vol, encoding="unicode"), 0)
    entry = templates.mark(conn, "default", f"{prefix}tpl.qcow2", name=f"{prefix}tpl")
    yield entry
    templates.unmark(entry["name"])


@pytest.mark.fast
@pytest.mark.parametrize("full_clone", [False, True])
def test_template_disk_linked_or_full(conn, prefix, template, full_clone):
    from kvmkit.images import qemu_img

    out = create_vm(conn, {"name": f"{prefix}fromtpl", "template": template["name"], "full_clone": full_clone,
                           "memory_mib": "256M", "nics": []})
    disk = out["disks"][0]
    assert disk.endswith(f"/{prefix}fromtpl-disk0.qcow2")
    info = qemu_img.info(disk, "qcow2")
    backing = info.get("backing-filename") or info.get("full-backing-filename")
    assert (backing == template["path"]) is (not full_clone)
    root = etree.fromstring(conn.lookupByName(out["name"]).XMLDesc(0).encode())
    assert root.find("devices/disk/driver").get("type") == "qcow2"
    assert root.find("metadata").find("{https://kvmkit.dev/xmlns/vm/1}vm/{https://kvmkit.dev/xmlns/vm/1}template")\
        .text == template["name"]


@pytest.mark.fast
def test_missing_template_leaves_nothing(conn, prefix):
    with pytest.raises(NotFound, match=f"template '{prefix}none' not found"):
        create_vm(conn, {"name": f"{prefix}vm", "template": f"{prefix}none", "disks": [{"size": "16M"}],
                         "nics": []})
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
def test_uefi_vm_is_defined_with_firmware_autoselection(conn, prefix):
    out = create_vm(conn, micro(f"{prefix}efi", firmware="uefi"))
    root = etree.fromstring(conn.lookupByName(out["name"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    assert root.find("os").get("firmware") == "efi"
    assert "q35" in root.find("os/type").get("machine")


@pytest.mark.fast
def test_hugepages_vm_that_cannot_start_is_rolled_back(conn, prefix):
    from kvmkit.errors import InvalidState

    with pytest.raises(InvalidState, match="huge"):
        create_vm(conn, micro(f"{prefix}huge", memory_mib="64G", hugepages=True, disks=[{"size": "16M"}]),
                  start=True)
    assert leftovers(conn, prefix) == []


@pytest.mark.fast
@pytest.mark.parametrize("step", ["defining VM", "creating volume"])
def test_ctrl_c_mid_create_rolls_back(conn, prefix, step):
    """An interrupt (Ctrl-C) arriving while create reports a step undoes everything done so far."""

    def progress(msg: str) -> None:
        if msg.startswith(step) and "disk1" not in msg:
            raise KeyboardInterrupt

    def interrupt_after_volumes(msg: str) -> None:
        if msg.startswith("defining VM"):
            assert len(leftovers(conn, prefix)) == 2  # both volumes exist at this point
        progress(msg)

    with pytest.raises(KeyboardInterrupt):
        create_vm(conn, micro(f"{prefix}intr", disks=[{"size": "16M"}, {"size": "16M", "format": "raw"}]),
                  progress=interrupt_after_volumes)
    assert leftovers(conn, prefix) == []


@pytest.mark.guest
def test_wide_device_set_boots(conn, prefix, workdir):
    """Every bus and NIC model kvmkit offers, plus VNC, RNG, balloon, agent channel, pinning: QEMU runs it."""
    iso = workdir / "empty.iso"
    iso.write_bytes(b"\0" * 4096)
    out = create_vm(conn, micro(
        f"{prefix}wide", vcpus=1, max_vcpus=2, cores=2, memory_mib="256M", max_memory_mib="384M",
        disks=[{"size": "16M", "bus": "virtio", "cache": "none", "io": "native"},
               {"size": "16M", "bus": "virtio-scsi", "format": "raw", "cache": "writeback"},
               {"size": "16M", "bus": "sata", "cache": "unsafe", "io": "threads"},
               {"size": "16M", "bus": "ide", "format": "raw", "shareable": True, "cache": "none"},
               {"device": "cdrom", "path": str(iso)}],
        nics=[{"source": "default", "model": m} for m in ("virtio", "e1000e", "rtl8139")],
        graphics={"type": "vnc", "password": "secret1"}, cpuset="0-1", vcpupin={0: "0"}, emulatorpin="0-1",
        nosharepages=True, on_crash="preserve"), start=True)
    SerialLog(out["serial_log"]).wait_for("KVMKIT-GUEST-READY")
    root = etree.fromstring(conn.lookupByName(out["name"]).XMLDesc(0).encode())
    buses = sorted(t.get("bus") for t in root.iterfind("devices/disk/target"))
    assert buses == ["ide", "sata", "sata", "scsi", "virtio"]
    assert int(root.find("devices/graphics").get("port")) >= 5900


@pytest.mark.guest
def test_hugepages_vm_boots_with_memfd_when_no_hugetlbfs_is_mounted(conn, prefix):
    """On a host without a hugetlbfs mount, --hugepages is backed by memfd and the VM really starts."""
    from pathlib import Path

    nr = Path("/proc/sys/vm/nr_hugepages")
    before = int(nr.read_text())
    try:
        nr.write_text(str(before + 80))
        out = create_vm(conn, micro(f"{prefix}hpm", memory_mib=128, hugepages=True), start=True)
        xml = conn.lookupByName(out["name"]).XMLDesc(0)
        if "hugetlbfs" not in Path("/proc/mounts").read_text():
            assert "<source type='memfd'/>" in xml
            assert "<page size='2048' unit='KiB'/>" in xml
        assert "<hugepages" in xml
        conn.lookupByName(out["name"]).destroy()
    finally:
        nr.write_text(str(before))


@pytest.mark.fast
def test_imported_disk_naming_a_backing_file_is_refused(conn, prefix, workdir):
    import subprocess

    base, top = workdir / "base.qcow2", workdir / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(top)],
                   check=True)
    with pytest.raises(InvalidInput, match="names a backing file"):
        create_vm(conn, micro(f"{prefix}imp", disks=[{"path": str(top)}]))
    with pytest.raises(InvalidInput, match="is a qcow2 image, not raw"):
        create_vm(conn, micro(f"{prefix}imp", disks=[{"path": str(base), "format": "raw"}]))
    assert leftovers(conn, prefix) == []
