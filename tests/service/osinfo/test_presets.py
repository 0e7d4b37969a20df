"""OS presets applied to specs and domain XML: debian12, win11 (UEFI + Secure Boot + TPM 2.0, SATA/e1000e unless
--virtio-win), explicit values winning with warnings, unknown releases falling back; the libosinfo metadata
round trip."""

from __future__ import annotations

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.service.osinfo.presets import apply_preset, apply_to_xml, describe_vm
from kvmkit.spec.vm import VMSpec, parse_spec
from kvmkit.xml.domain import apply_spec, spec_to_xml, validate_with_schema, xml_to_spec
from kvmkit.xml.util import parse

pytestmark = pytest.mark.fast
GIB = 1024**3
NS = {"l": "http://libosinfo.org/xmlns/libvirt/domain/1.0"}


def spec(**fields) -> VMSpec:
    return VMSpec.model_validate({"name": "kt-preset", "nics": [{"type": "network", "source": "default"}], **fields})


def xml_of(s: VMSpec) -> etree._Element:
    """The XML create would define (new disks given the paths create would give them)."""
    disks = [d.model_dump() | ({"size": None, "path": f"/var/lib/libvirt/images/{s.name}-disk{i}.qcow2",
                                "format": "qcow2"} if d.size else {}) for i, d in enumerate(s.disks)]
    s = s.updated(disks=disks)
    root = parse(spec_to_xml(s))
    apply_to_xml(root, s)
    problems = validate_with_schema(etree.tostring(root, encoding="unicode"))
    assert not problems, problems
    return root


def test_debian12_gets_virtio_q35_and_its_recommended_sizes() -> None:
    applied = apply_preset(spec(os="debian12", disks=[{"size": "20G"}]))
    s = applied.spec
    assert s.os == "http://debian.org/debian/12"
    assert (s.disks[0].bus, s.nics[0].model, s.machine, s.firmware) == ("virtio", "virtio", "q35", "bios")
    assert (s.memory_mib, s.max_memory_mib, s.vcpus, s.rng) == (2048, 2048, 1, True)
    assert applied.warnings == []
    assert applied.os["source"] == "kvmkit"
    root = xml_of(s)
    assert root.find("devices/disk/target").get("bus") == "virtio"
    assert root.find("devices/interface/model").get("type") == "virtio"
    assert root.find("os/type").get("machine") == "q35"
    assert root.find("metadata/l:libosinfo/l:os", NS).get("id") == "http://debian.org/debian/12"
    assert root.find("devices/tpm") is None and root.find("os/firmware") is None


def test_win11_gets_uefi_secure_boot_a_tpm_and_sata_e1000e_without_virtio_drivers() -> None:
    applied = apply_preset(spec(os="win11", disks=[{"size": "64G"}]))
    s = applied.spec
    assert (s.firmware, s.machine, s.disks[0].bus, s.nics[0].model) == ("uefi", "q35", "sata", "e1000e")
    assert (s.memory_mib, s.vcpus, s.rng) == (4096, 2, False)
    assert s.graphics is not None and s.graphics.type == "vnc"  # the installer needs a display
    assert any("Secure Boot" in n for n in applied.notes) and any("TPM 2.0" in n for n in applied.notes)
    assert any("kvmkit vm disk attach" in n for n in applied.notes)  # how to switch to virtio later
    assert applied.warnings == []
    root = xml_of(s.updated(virt_type="qemu"))
    assert root.find("os").get("firmware") == "efi"
    features = {f.get("name"): f.get("enabled") for f in root.iterfind("os/firmware/feature")}
    assert features == {"secure-boot": "yes", "enrolled-keys": "yes"}
    assert root.find("features/smm").get("state") == "on"
    tpm = root.find("devices/tpm")
    assert tpm.get("model") == "tpm-crb"
    assert (tpm.find("backend").get("type"), tpm.find("backend").get("version")) == ("emulator", "2.0")
    assert root.find("clock").get("offset") == "localtime"
    assert root.find("features/hyperv") is None  # QEMU offers the enlightenments only with KVM
    assert root.find("devices/disk/target").get("bus") == "sata"
    assert root.find("devices/interface/model").get("type") == "e1000e"
    kvm = xml_of(s.updated(virt_type="kvm"))
    assert kvm.find("features/hyperv/relaxed").get("state") == "on"
    assert describe_vm(s.os, root)["tpm"] == {"model": "tpm-crb", "backend": "emulator", "version": "2.0"}
    assert describe_vm(s.os, root)["secure_boot"] is True


def test_virtio_win_adds_a_second_cdrom_and_virtio_devices() -> None:
    s = apply_preset(spec(os="win11", disks=[{"size": "64G"}, {"device": "cdrom", "path": "/isos/win11.iso"}],
                          virtio_win="/isos/virtio-win.iso")).spec
    cdroms = [d for d in s.disks if d.device == "cdrom"]
    assert [d.path for d in cdroms] == ["/isos/win11.iso", "/isos/virtio-win.iso"]
    assert all(d.bus == "sata" for d in cdroms)
    assert (s.disks[0].bus, s.nics[0].model, s.virtio_win) == ("virtio", "virtio", None)


def test_explicit_values_win_and_values_below_the_minimum_warn() -> None:
    applied = apply_preset(spec(os="win11", memory_mib="2G", vcpus=1, disks=[{"size": "30G", "bus": "virtio"}],
                                nics=[{"type": "network", "source": "default", "model": "virtio"}]))
    s = applied.spec
    assert (s.memory_mib, s.vcpus, s.disks[0].bus, s.nics[0].model) == (2048, 1, "virtio", "virtio")
    text = " | ".join(applied.warnings)
    assert "memory 2048 MiB is below the minimum for win11 (4096 MiB)" in text
    assert "vCPUs 1 is below the minimum for win11 (2)" in text
    assert "disk 30 GiB is below the minimum for win11 (64 GiB)" in text
    with pytest.raises(InvalidInput, match="does not boot with BIOS"):
        apply_preset(spec(os="win11", firmware="bios"))
    low = apply_preset(spec(os="debian12", memory_mib=1024, disks=[{"size": "10G"}]))
    assert low.warnings == ["memory 1024 MiB is below the recommended for debian12 (2048 MiB)",
                            "disk 10 GiB is below the recommended for debian12 (20 GiB)"]
    none = apply_preset(spec(os="debian12"))
    assert any("no disk" in w and "--disk size=20G" in w for w in none.warnings)


def test_an_unknown_release_falls_back_with_a_warning_naming_it() -> None:
    applied = apply_preset(spec(os="fedora99", disks=[{"size": "20G"}]))
    assert applied.spec.os == "http://fedoraproject.org/fedora/37"
    assert any("fedora99" in w and "fedora37" in w for w in applied.warnings)
    assert applied.spec.disks[0].bus == "virtio"


def test_libosinfo_metadata_round_trips_with_other_metadata_intact() -> None:
    s = parse_spec({"name": "kt-meta", "os": "http://debian.org/debian/12", "metadata": {"a": "b"}})
    root = parse(spec_to_xml(s))
    etree.SubElement(root.find("metadata"), "{https://example.org/app}thing", nsmap={"app": "https://example.org/app"}
                     ).text = "keep me"
    xml = etree.tostring(root, encoding="unicode")
    back = xml_to_spec(xml)
    assert back.os == "http://debian.org/debian/12" and back.metadata == {"a": "b"}
    changed = apply_spec(xml, back.updated(os="http://microsoft.com/win/11", metadata={"c": "d"}))
    croot = parse(changed)
    assert croot.find("metadata/l:libosinfo/l:os", NS).get("id") == "http://microsoft.com/win/11"
    assert croot.find("metadata/{https://example.org/app}thing").text == "keep me"
    assert xml_to_spec(changed).metadata == {"c": "d"}
    dropped = parse(apply_spec(changed, xml_to_spec(changed).updated(os=None)))
    assert dropped.find("metadata/l:libosinfo", NS) is None
    assert dropped.find("metadata/{https://example.org/app}thing").text == "keep me"
    # a short id (before create resolves it) never overwrites the id the XML has
    same = parse(apply_spec(changed, xml_to_spec(changed).updated(os="debian12")))
    assert same.find("metadata/l:libosinfo/l:os", NS).get("id") == "http://microsoft.com/win/11"


def test_os_field_validation() -> None:
    for good in ("debian12", "ubuntu24.04", "dragonflybsd1.0A", "centos-stream9", "http://debian.org/debian/12"):
        assert spec(os=good).os == good
    for bad in ("debian 12", "../x", "http://x/<y>", "a" * 80, "file:///etc/passwd"):
        with pytest.raises(ValueError, match="osinfo short id"):
            spec(os=bad)
    with pytest.raises(ValueError, match="absolute path"):
        spec(virtio_win="virtio-win.iso")
