"""Property test: any valid spec becomes schema-valid XML that reads back as the same spec."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from kvmkit.spec.vm import VMSpec, parse_spec
from kvmkit.xml.domain import apply_spec, spec_to_xml, validate_with_schema, xml_to_spec

names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z")
paths = st.from_regex(r"\A/[a-z0-9_]{1,8}/[a-z0-9_.-]{1,12}\Z")
disk = st.fixed_dictionaries({
    "path": paths,
    "format": st.sampled_from(["raw", "qcow2"]),
    "bus": st.sampled_from(["virtio", "virtio-scsi", "sata", "ide"]),
    "cache": st.sampled_from([None, "none", "writethrough", "writeback", "directsync", "unsafe"]),
    "readonly": st.booleans(),
    "shareable": st.booleans(),
})
nic = st.fixed_dictionaries({
    "type": st.sampled_from(["network", "bridge", "direct"]),
    "source": st.from_regex(r"\A[a-z][a-z0-9]{0,8}\Z"),
    "model": st.sampled_from(["virtio", "e1000e", "rtl8139"]),
    "mac": st.from_regex(r"\A52:54:00:[0-9a-f]{2}:[0-9a-f]{2}:[0-9a-f]{2}\Z"),
})


@st.composite
def specs(draw) -> VMSpec:
    max_vcpus = draw(st.integers(1, 8))
    max_mem = draw(st.integers(64, 65536))
    macs = draw(st.lists(nic, max_size=3, unique_by=lambda n: n["mac"]))
    data = {
        "name": draw(names), "virt_type": draw(st.sampled_from(["kvm", "qemu"])),
        "memory_mib": draw(st.integers(64, max_mem)), "max_memory_mib": max_mem,
        "vcpus": draw(st.integers(1, max_vcpus)), "max_vcpus": max_vcpus,
        "disks": draw(st.lists(disk, max_size=4)), "nics": macs,
        "graphics": draw(st.one_of(st.none(), st.fixed_dictionaries({"type": st.sampled_from(["vnc", "spice"])}))),
        "hugepages": draw(st.booleans()), "nosharepages": draw(st.booleans()), "balloon": draw(st.booleans()),
        "rng": draw(st.booleans()), "guest_agent": draw(st.booleans()), "serial": draw(st.booleans()),
        "firmware": draw(st.sampled_from(["bios", "uefi"])),
        "boot": draw(st.lists(st.sampled_from(["hd", "cdrom", "network"]), unique=True, max_size=3)),
        # "profile" is kvmkit's record of the VM profile (spec/profiles.py), not free-form metadata
        "metadata": draw(st.dictionaries(
            st.from_regex(r"\A[a-z][a-z0-9_]{0,8}\Z").filter(lambda k: k != "profile"), st.text(
            st.characters(min_codepoint=32, max_codepoint=0x7e), max_size=12), max_size=3)),
        "title": draw(st.one_of(st.none(), st.text(st.characters(min_codepoint=32, max_codepoint=0x7e),
                                                   min_size=1, max_size=20))),
    }
    if draw(st.booleans()):
        data["cores"] = max_vcpus
    data["usb"] = draw(st.booleans())
    if data["firmware"] == "bios" and draw(st.booleans()):
        data["profile"] = "fast-boot"  # explicit values above win; the profile fills machine, cmdline ...
    return parse_spec(data)


@pytest.mark.fast
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_any_spec_gives_valid_xml_that_round_trips(spec):
    xml = spec_to_xml(spec)
    assert validate_with_schema(xml) == []
    again = xml_to_spec(xml)
    got, want = again.model_dump(), spec.model_dump()
    for d in got["disks"]:
        d["target"] = None
    assert got == want
    canon = lambda x: etree.tostring(etree.fromstring(x.encode()), method="c14n")  # noqa: E731
    assert canon(apply_spec(xml, again)) == canon(xml)
