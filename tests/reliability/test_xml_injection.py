"""Arbitrary text in every spec field that reaches XML never changes the XML's structure.

For each field, hypothesis feeds any text (control characters, lone surrogates, markup, entities, CDATA
ends, NUL, very long strings) into an otherwise valid spec. Either the spec refuses it with kvmkit's
InvalidInput / pydantic's ValidationError naming the field, or the XML built from it (lxml) has exactly the
element-and-attribute shape of the same spec with a harmless value, is valid against libvirt's schema (VMs),
and reads back the value unchanged. Any other exception fails. Snapshot names and descriptions go through
libvirt's test driver (the snapshot XML is built inside the service function).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from lxml import etree
from pydantic import ValidationError

from kvmkit.errors import InvalidInput, KvmkitError
from kvmkit.spec.network import NetworkSpec
from kvmkit.spec.vm import parse_spec
from kvmkit.xml import network as net_xml
from kvmkit.xml.domain import spec_to_xml, validate_with_schema, xml_to_spec

pytestmark = pytest.mark.fast

NASTY = ["</title><devices><disk/></devices>", "]]>", "&amp;&lt;", "&xxe;", "<!ENTITY x 'y'>", "\x00", "a\x00b",
         "\ud800", "\udfff", "\x01\x1f", "\ufffe", "\uffff", "line\nbreak", "cr\rhere", "\t", "'\"<>&", "${HOME}",
         "$(reboot)", "`id`", "\u2028\u2029", "\ufeff", "\x85", "\u200b", " leading", "trailing ", "", " ",
         "x" * 5000, "..", "../../etc/passwd", "/dev/../etc/shadow", "/a/b\x7f", "-rf", "a" * 65, "😀" * 10]
ANY_TEXT = st.one_of(st.sampled_from(NASTY), st.text(st.characters(exclude_categories=()), max_size=200))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

BASE: dict[str, Any] = {"name": "vm1", "memory_mib": 256, "kernel": "/boot/vmlinuz", "initrd": "/boot/initrd",
                        "cmdline": "console=ttyS0", "title": "t", "description": "d", "serial_log": "/var/log/x.log",
                        "metadata": {"owner": "me"}, "disks": [{"path": "/var/lib/x.qcow2", "format": "qcow2"}],
                        "nics": [{"type": "network", "source": "default"}], "graphics": {"type": "vnc"}}


def shape(xml: str) -> list[tuple[str, tuple[str, ...]]]:
    """Every element's path and attribute names, in document order (the structure without the values)."""
    root = etree.fromstring(xml.encode())
    tree = root.getroottree()
    return [(tree.getpath(el), tuple(sorted(el.attrib))) for el in root.iter() if isinstance(el.tag, str)]


def refused(exc: BaseException) -> bool:
    return isinstance(exc, InvalidInput | ValidationError) and bool(str(exc).strip())


def build(data: dict[str, Any]) -> Any:
    try:
        return parse_spec(data)
    except InvalidInput as err:
        assert err.message.startswith("invalid"), err.message
        return None


# field -> (how to put a value into the spec data, how to read it back from a spec)
VM_FIELDS: dict[str, tuple[Any, Any]] = {
    "name": (lambda d, v: d.update(name=v), lambda s: s.name),
    "title": (lambda d, v: d.update(title=v), lambda s: s.title),
    "description": (lambda d, v: d.update(description=v), lambda s: s.description),
    "cmdline": (lambda d, v: d.update(cmdline=v), lambda s: s.cmdline),
    "kernel": (lambda d, v: d.update(kernel=v), lambda s: s.kernel),
    "initrd": (lambda d, v: d.update(initrd=v), lambda s: s.initrd),
    "serial_log": (lambda d, v: d.update(serial_log=v), lambda s: s.serial_log),
    "metadata-value": (lambda d, v: d.update(metadata={"owner": v}), lambda s: s.metadata.get("owner")),
    "metadata-key": (lambda d, v: d.update(metadata={v: "x"}), lambda s: next(iter(s.metadata), None)),
    "disk-path": (lambda d, v: d.update(disks=[{"path": v, "format": "qcow2"}]), lambda s: s.disks[0].path),
    "disk-volume": (lambda d, v: d.update(disks=[{"volume": v, "pool": "default", "format": "qcow2"}]),
                    lambda s: s.disks[0].volume),
    "disk-pool": (lambda d, v: d.update(disks=[{"volume": "v", "pool": v, "format": "qcow2"}]),
                  lambda s: s.disks[0].pool),
    "nic-network": (lambda d, v: d.update(nics=[{"type": "network", "source": v}]), lambda s: s.nics[0].source),
    "nic-bridge": (lambda d, v: d.update(nics=[{"type": "bridge", "source": v}]), lambda s: s.nics[0].source),
    "vnc-password": (lambda d, v: d.update(graphics={"type": "vnc", "password": v}),
                     lambda s: s.graphics.password),
    "vnc-listen": (lambda d, v: d.update(graphics={"type": "vnc", "listen": v}), lambda s: s.graphics.listen),
    "cpu-model": (lambda d, v: d.update(cpu_model=v), lambda s: s.cpu_model),
    "machine": (lambda d, v: d.update(machine=v), lambda s: s.machine),
}


def _same(a: Any, b: Any) -> bool:
    return a == b or (a in ("", None) and b in ("", None))  # an empty text element reads back as None


@pytest.mark.parametrize("field", sorted(VM_FIELDS))
@SETTINGS
@given(value=ANY_TEXT)
@example(value="</title><foo/>")
def test_vm_spec_text_never_changes_the_xml_structure(field: str, value: str) -> None:
    put, get = VM_FIELDS[field]
    data = {**BASE, "metadata": dict(BASE["metadata"])}
    put(data, value)
    try:
        spec = parse_spec(data)
    except Exception as exc:
        assert refused(exc), f"{field}={value!r} raised {type(exc).__name__}: {exc}"
        return
    safe = {**BASE, "metadata": dict(BASE["metadata"])}
    put(safe, _harmless(field, value))
    safe_spec = build(safe)
    xml = spec_to_xml(spec)
    if safe_spec is not None:
        assert shape(xml) == shape(spec_to_xml(safe_spec)), f"{field}={value!r} changed the XML structure"
    assert validate_with_schema(xml) == [], (field, value)
    assert _same(get(xml_to_spec(xml)), get(spec)), f"{field}={value!r} did not read back"


def _harmless(field: str, value: str) -> str:
    """A value of the same kind without anything odd: the structure to compare with."""
    if field == "metadata-key":
        return value  # the key is the element's name: its XML holds exactly that one element
    if field in ("kernel", "initrd", "serial_log", "disk-path"):  # absolute paths; /dev/... is a block device
        return "/dev/x" if field == "disk-path" and value.startswith("/dev/") else "/x"
    return "x" if value else ""


NET_FIELDS: dict[str, Any] = {
    "name": lambda d, v: d.update(name=v),
    "domain": lambda d, v: d.update(domain=v),
    "bridge": lambda d, v: d.update(bridge=v),
    "forward_dev": lambda d, v: d.update(forward_dev=v),
    "host-name": lambda d, v: d.update(hosts=[{"mac": "52:54:00:00:00:01", "ip": "192.168.150.10", "name": v}]),
}
NET_BASE: dict[str, Any] = {"name": "n1", "mode": "nat", "subnet": "192.168.150.0/24", "domain": "lab",
                            "bridge": "virbr9", "forward_dev": "eth0",
                            "hosts": [{"mac": "52:54:00:00:00:01", "ip": "192.168.150.10", "name": "h"}]}


@pytest.mark.parametrize("field", sorted(NET_FIELDS))
@SETTINGS
@given(value=ANY_TEXT)
def test_network_spec_text_never_changes_the_xml_structure(field: str, value: str) -> None:
    data = {**NET_BASE, "hosts": [dict(h) for h in NET_BASE["hosts"]]}
    NET_FIELDS[field](data, value)
    try:
        spec = NetworkSpec.model_validate(data)
    except Exception as exc:
        assert refused(exc), f"{field}={value!r} raised {type(exc).__name__}: {exc}"
        return
    safe = {**NET_BASE, "hosts": [dict(h) for h in NET_BASE["hosts"]]}
    NET_FIELDS[field](safe, "x")
    xml = net_xml.spec_to_xml(spec)
    assert shape(xml) == shape(net_xml.spec_to_xml(NetworkSpec.model_validate(safe)))
    facts = net_xml.describe_xml(xml)
    assert facts["name"] == spec.name


@pytest.mark.parametrize("what", ["name", "description"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(value=ANY_TEXT)
def test_snapshot_name_and_description_never_change_the_snapshot_xml(test_conn, what: str, value: str) -> None:
    """Through libvirt's test driver: the service refuses the text or the snapshot reads it back unchanged."""
    from kvmkit.service.copies import snapshots

    name, description = (value, "d") if what == "name" else ("s1", value)
    try:
        made = snapshots.create_snapshot(test_conn, "test", name, description=description)
    except Exception as exc:
        assert isinstance(exc, KvmkitError) and exc.message, f"{what}={value!r}: {type(exc).__name__}: {exc}"
        return
    try:
        assert made["name"] == name
        assert _same(made["description"], description), (made["description"], description)
        root = etree.fromstring(test_conn.lookupByName("test").snapshotLookupByName(name).getXMLDesc(0).encode())
        assert [c.tag for c in root if c.tag in ("name", "description")].count("name") == 1
    finally:
        test_conn.lookupByName("test").snapshotLookupByName(name).delete(0)
