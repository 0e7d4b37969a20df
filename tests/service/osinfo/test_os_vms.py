"""``vm create --os`` on real libvirt: debian12 and win11 defined on qemu:///system (and test:///default) with
the devices osinfo recommends, read back from libvirt's own XML; the win11 VM's firmware started (OVMF with
Secure Boot and Microsoft's keys, swtpm) to show the host can run what was defined; vm show reports the OS."""

from __future__ import annotations

import json

import libvirt
import pytest
from lxml import etree

from kvmkit.service.vms.create import create_vm
from kvmkit.service.vms.query import show_vm
from tests.support.cli_run import kvmkit, leftovers

NS = {"l": "http://libosinfo.org/xmlns/libvirt/domain/1.0"}


def _xml(dom: libvirt.virDomain, flags: int = libvirt.VIR_DOMAIN_XML_INACTIVE) -> etree._Element:
    return etree.fromstring(dom.XMLDesc(flags).encode())


@pytest.mark.guest
def test_debian12_and_win11_define_on_qemu_system_with_the_recommended_devices(conn, prefix) -> None:
    deb = create_vm(conn, {"name": f"{prefix}deb", "os": "debian12", "disks": [{"size": "1G"}],
                           "nics": [{"type": "network", "source": "default"}]})
    assert deb["os"]["short_id"] == "debian12" and deb["os"]["source"] == "kvmkit"
    assert deb["warnings"] == ["disk 1 GiB is below the minimum for debian12 (10 GiB); the installer or the guest "
                               "may fail: raise it (--disk size=)"]
    root = _xml(conn.lookupByName(f"{prefix}deb"))
    assert root.find("metadata/l:libosinfo/l:os", NS).get("id") == "http://debian.org/debian/12"
    assert root.find("devices/disk/target").get("bus") == "virtio"
    assert root.find("devices/interface/model").get("type") == "virtio"
    assert root.find("os/type").get("machine").startswith("pc-q35")
    assert int(root.findtext("memory")) == 2048 * 1024
    assert root.find("devices/tpm") is None

    win = create_vm(conn, {"name": f"{prefix}win", "os": "win11", "disks": [{"size": "64G"}],
                           "nics": [{"type": "network", "source": "default"}]})
    assert win["warnings"] == []
    dom = conn.lookupByName(f"{prefix}win")
    root = _xml(dom)
    assert root.find("os").get("firmware") == "efi"
    assert {f.get("name"): f.get("enabled") for f in root.iterfind("os/firmware/feature")} == \
        {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert root.find("features/smm").get("state") == "on"
    backend = root.find("devices/tpm[@model='tpm-crb']/backend")
    assert (backend.get("type"), backend.get("version")) == ("emulator", "2.0")
    assert root.find("devices/disk/target").get("bus") == "sata"
    assert root.find("devices/interface/model").get("type") == "e1000e"
    assert root.find("devices/graphics").get("type") == "vnc"
    assert int(root.findtext("memory")) == 4096 * 1024 and root.findtext("vcpu") == "2"
    shown = show_vm(conn, f"{prefix}win")
    assert shown["os"]["short_id"] == "win11" and shown["secure_boot"] is True
    assert shown["tpm"] == {"model": "tpm-crb", "backend": "emulator", "version": "2.0"}
    assert shown["firmware"] == "uefi"

    # Windows cannot boot here, but its firmware can: libvirt picks the secure-boot OVMF with Microsoft's
    # keys enrolled and starts swtpm for the TPM
    dom.create()
    try:
        live = _xml(dom, 0)
        loader = live.find("os/loader")
        assert loader.get("secure") == "yes" and loader.get("type") == "pflash", etree.tostring(loader)
        assert live.find("os/nvram") is not None
        assert live.find("devices/tpm/backend").get("type") == "emulator"
    finally:
        dom.destroy()


@pytest.mark.guest
def test_plain_uefi_starts_the_ovmf_without_secure_boot(conn, prefix) -> None:
    """Without an OS that needs it, --firmware uefi is UEFI without Secure Boot, in the definition and in the
    firmware libvirt picked: a bare firmware='efi' got the Secure Boot OVMF here, which refused an imported
    guest's unsigned GRUB ("Access Denied")."""
    create_vm(conn, {"name": f"{prefix}efi", "firmware": "uefi", "disks": [{"size": "64M"}]})
    dom = conn.lookupByName(f"{prefix}efi")
    assert show_vm(conn, f"{prefix}efi")["secure_boot"] is False
    dom.create()
    try:
        loader = _xml(dom, 0).find("os/loader")
        assert loader.get("type") == "pflash" and loader.get("secure") != "yes", etree.tostring(loader)
    finally:
        dom.destroy()


@pytest.mark.guest
def test_cli_vm_create_os_and_fallback_warning(conn, prefix) -> None:
    name = f"{prefix}fed"
    res = kvmkit("--json", "vm", "create", name, "--os", "fedora99", "--disk", "size=1G")
    out = json.loads(res.stdout)
    assert out["os"]["short_id"] == "fedora37"
    assert any("fedora99" in w and "fedora37" in w for w in out["warnings"])
    shown = json.loads(kvmkit("--json", "vm", "show", name).stdout)
    assert shown["os"]["id"] == "http://fedoraproject.org/fedora/37"
    human = kvmkit("vm", "show", name).stdout
    assert "fedora37" in human
    res = kvmkit("vm", "create", f"{prefix}w", "--os", "win11", "--firmware", "bios", check=False)
    assert res.returncode == 1 and "does not boot with BIOS" in res.stderr
    assert leftovers(conn, f"{prefix}w") == []
    res = kvmkit("vm", "create", f"{prefix}x", "--os", "nosuchos9000x", check=False)
    assert res.returncode == 1 and "unknown OS" in res.stderr


@pytest.mark.fast
def test_os_presets_define_on_the_test_driver(test_conn) -> None:
    for os_name in ("debian12", "win11", "ubuntu24.04", "rhel9", "win10"):
        name = f"kt-os-{os_name.replace('.', '-')}"
        res = create_vm(test_conn, {"name": name, "os": os_name,
                                    "disks": [{"size": "1G", "pool": "default-pool"}],
                                    "nics": [{"type": "network", "source": "default"}]})
        assert res["defined"], res
        root = _xml(test_conn.lookupByName(name))
        assert root.find("metadata/l:libosinfo/l:os", NS).get("id") == res["os"]["id"]
        expected = "sata" if os_name.startswith("win") else "virtio"
        assert root.find("devices/disk/target").get("bus") == expected
    assert _xml(test_conn.lookupByName("kt-os-win11")).find("devices/tpm") is not None


@pytest.mark.fast
def test_print_xml_with_os_and_virtio_win(test_conn, tmp_path) -> None:
    iso = tmp_path / "virtio-win.iso"
    iso.write_bytes(b"\0" * 4096)
    res = create_vm(test_conn, {"name": "kt-os-print", "os": "win11", "virtio_win": str(iso),
                                "disks": [{"size": "64G", "pool": "default-pool"}],
                                "nics": [{"type": "network", "source": "default"}]}, print_xml=True)
    root = etree.fromstring(res["xml"].encode())
    assert [d.find("source").get("file") for d in root.iterfind("devices/disk[@device='cdrom']")] == [str(iso)]
    assert root.find("devices/disk[@device='disk']/target").get("bus") == "virtio"
    assert root.find("devices/interface/model").get("type") == "virtio"
    assert any("Load driver" in n for n in res["notes"])
