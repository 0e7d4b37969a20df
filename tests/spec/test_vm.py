"""VMSpec: every bad input of issue 3 gives one line naming the field and the fix."""

from __future__ import annotations

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.spec.vm import VMSpec, parse_spec

pytestmark = pytest.mark.fast


def bad(match: str, **data):
    with pytest.raises(InvalidInput) as err:
        parse_spec({"name": "vm1", **data})
    text = str(err.value)
    assert "\n" not in err.value.message, "errors are one line"
    assert match in text, text
    return err.value


def test_defaults_and_normalisation():
    spec = parse_spec({"name": "vm1", "memory_mib": "1G", "vcpus": 2})
    assert (spec.memory_mib, spec.max_memory_mib, spec.vcpus, spec.max_vcpus) == (1024, 1024, 2, 2)
    assert spec.serial and spec.balloon and spec.firmware == "bios"
    assert spec.default_serial_log() == "/var/log/kvmkit/vm1.serial.log"


@pytest.mark.parametrize("name", ["a/b", "<x>", "", "x" * 65])
def test_bad_names(name):
    err = bad("invalid name", name=name)
    assert err.hint


def test_bad_size_names_the_field():
    err = bad("memory_mib", memory_mib="12Q")
    assert "'12Q' is not a size" in err.message
    bad("disks.0.size", disks=[{"size": "12Q"}])


def test_memory_above_max():
    err = bad("above max memory", memory_mib="2G", max_memory_mib="1G")
    assert "--memory" in err.message  # says how to fix it


def test_vcpus_above_max():
    bad("vcpus 4 is above max vcpus 2", vcpus=4, max_vcpus=2)


def test_topology_must_multiply_to_max_vcpus():
    bad("does not match max vcpus 4", vcpus=2, max_vcpus=4, sockets=1, cores=3, threads=1)
    spec = parse_spec({"name": "vm1", "vcpus": 2, "max_vcpus": 4, "cores": 2})
    assert (spec.sockets, spec.cores, spec.threads) == (2, 2, 1)


def test_disks():
    bad("exactly one of path=, volume= or size=", disks=[{"bus": "virtio"}])
    bad("exactly one of", disks=[{"size": "1G", "path": "/x.img"}])
    bad("not absolute", disks=[{"path": "rel/x.img"}])
    bad("io=native needs cache=none", disks=[{"size": "1G", "io": "native", "cache": "writeback"}])
    bad("'floppy' is not allowed", disks=[{"size": "1G", "bus": "floppy"}])
    bad("'vmdk' is not allowed", disks=[{"size": "1G", "format": "vmdk"}])
    bad("'bogus' is not allowed", disks=[{"size": "1G", "cache": "bogus"}])
    bad("disk target vda is used twice", disks=[{"size": "1G", "target": "vda"}, {"size": "1G", "target": "vda"}])
    spec = parse_spec({"name": "vm1", "disks": [
        {"size": "10G", "format": "qcow2", "bus": "virtio-scsi", "cache": "none", "io": "native"},
        {"path": "/dev/sdb", "format": "raw", "shareable": True, "cache": "directsync"},
        {"volume": "v", "readonly": True},
        {"device": "cdrom", "path": "/isos/d.iso"},
    ]})
    assert spec.disks[0].size == 10 * 1024**3
    assert spec.disks[1].is_block
    assert spec.disks[2].pool == "default"
    assert spec.disks[3].bus == "sata" and spec.disks[3].readonly
    bad("CD-ROM cannot use bus virtio", disks=[{"device": "cdrom", "path": "/x.iso", "bus": "virtio"}])


def test_nics_and_graphics():
    bad("network mac", nics=[{"mac": "zz:54:00:00:00:01"}])
    bad("given to two NICs", nics=[{"mac": "52:54:00:00:00:01"}, {"mac": "52:54:00:00:00:01"}])
    bad("'ne2k' is not allowed", nics=[{"model": "ne2k"}])
    bad("out of range", graphics={"type": "vnc", "port": 80})
    spec = parse_spec({"name": "vm1", "nics": [{"type": "bridge", "source": "br0", "model": "e1000e"},
                                                {"type": "direct", "source": "eth0", "mode": "vepa"}],
                       "graphics": {"type": "spice", "password": "s3cret"}})
    assert spec.nics[0].model == "e1000e" and spec.graphics is not None and spec.graphics.port is None


def test_cpu_and_tuning():
    bad("cpu_model", cpu_model="Sky lake")
    bad("cpu_mode custom needs cpu_model", cpu_mode="custom")
    bad("cpuset", cpuset="0-x")
    bad("vCPU 5", vcpupin={5: "0"})
    spec = parse_spec({"name": "vm1", "cpu_model": "Skylake-Client", "vcpus": 2, "vcpupin": {0: "0", 1: "1"},
                       "emulatorpin": "0", "numatune": {"mode": "preferred", "nodeset": "0"}})
    assert spec.cpu_mode == "custom"


def test_boot_sources_are_exclusive():
    bad("need a kernel", initrd="/boot/initrd")
    bad("choose one of --kernel and --template", kernel="/boot/k", template="t")
    bad("full_clone only applies with a template", full_clone=True)
    bad("not an absolute path", kernel="vmlinuz")
    bad("'hd2' is not allowed", boot=["hd2"])


def test_metadata_keys_and_uuid():
    bad("metadata key", metadata={"1bad": "x"})
    bad("not a UUID", uuid="nope")
    spec = parse_spec({"name": "vm1", "metadata": {"task": "42"}, "uuid": "3B9A2C61-2F7E-4B8E-9A77-1C0D5E6F7A81"})
    assert spec.uuid == "3b9a2c61-2f7e-4b8e-9a77-1c0d5e6f7a81"


def test_text_that_xml_cannot_hold_is_refused():
    bad("invalid title: title contains control characters", title="a\x00b")
    bad("invalid title", title="two\nlines")
    bad("invalid description", description="bell\x07")
    bad("invalid metadata", metadata={"k": "esc\x1b"})
    bad("invalid disks.0.path", disks=[{"path": "/a\x01b"}])
    bad("invalid kernel", kernel="/boot/k\nx")
    bad("not an IP address", graphics={"type": "vnc", "listen": "localhost; rm"})
    assert parse_spec({"name": "vm1", "description": "multi\nline ok"}).description == "multi\nline ok"


def test_unknown_fields_are_refused():
    bad("invalid colour: unknown field", colour="blue")


def test_updated_revalidates():
    spec = parse_spec({"name": "vm1"})
    assert spec.updated(memory_mib=1024, max_memory_mib=2048).max_memory_mib == 2048
    with pytest.raises(InvalidInput):
        spec.updated(memory_mib=4096)  # above the max of 512 it carries


def test_model_is_the_api_body_schema():
    schema = VMSpec.model_json_schema()
    assert {"name", "memory_mib", "disks", "nics", "metadata", "micro"} <= set(schema["properties"])
