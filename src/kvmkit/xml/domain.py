"""Domain XML <-> VMSpec, with lxml only.

Each element family lives in its own module (general, memory, cpu, osboot, disks, nics, graphics,
chardevs, misc_devices, metadata, libosinfo) exposing ``FIELDS``, ``read(root) -> dict`` and ``write(root, spec)``.
``apply_spec`` re-reads the existing XML and calls ``write`` only for the families whose fields differ,
so everything kvmkit does not model (sound, video, USB, other apps' metadata ...) stays as it was.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.spec.common import NAME_RE
from kvmkit.spec.vm import VMSpec, parse_spec
from kvmkit.xml import (
    chardevs,
    cpu,
    disks,
    general,
    graphics,
    libosinfo,
    memory,
    metadata,
    misc_devices,
    nics,
    osboot,
)
from kvmkit.xml.util import ensure, parse, to_string

FAMILIES = (general, metadata, libosinfo, memory, cpu, osboot, disks, nics, graphics, chardevs, misc_devices)

# Not modelled by the spec, written for new domains only: ACPI (graceful shutdown) and a UTC clock.


def read_fields(root: etree._Element) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for family in FAMILIES:
        data.update(family.read(root))
    return data


def xml_to_spec(xml: str) -> VMSpec:
    """The VMSpec describing a domain's XML (parts kvmkit does not model are ignored)."""
    root = parse(xml)
    if root.tag != "domain":
        raise InvalidInput(f"expected <domain> XML, got <{root.tag}>")
    data = read_fields(root)
    data = {k: v for k, v in data.items() if v is not None}
    name = data.get("name")
    if name is not None and not NAME_RE.match(name):
        # libvirt accepts names kvmkit would not create (spaces ...): describe the domain anyway
        return parse_spec({**data, "name": "unnamed"}).model_copy(update={"name": name})
    return parse_spec(data)


def spec_to_xml(spec: VMSpec) -> str:
    """Domain XML for a new VM."""
    root = etree.Element("domain", type=spec.virt_type or "qemu")
    for family in FAMILIES:
        family.write(root, spec)
    features = ensure(root, "features")
    etree.SubElement(features, "acpi")
    etree.SubElement(features, "apic")
    ensure(root, "clock", offset="utc")
    etree.indent(root, space="  ")
    return to_string(root)


def apply_spec(xml: str, spec: VMSpec) -> str:
    """``xml`` with the families that differ from ``spec`` rewritten; everything else untouched."""
    root = parse(xml)
    current = read_fields(root)
    for family in FAMILIES:
        if any(_norm(current.get(f)) != _norm(getattr(spec, f)) for f in family.FIELDS):
            family.write(root, spec)
    return to_string(root)


def _norm(value: Any) -> Any:
    """Compare spec values read from XML with the spec's own (models vs dicts, None max values)."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    if isinstance(value, list):
        return [_norm(v) for v in value]
    return value


def validate_with_schema(xml: str) -> list[str]:
    """Problems libvirt's RelaxNG schema (domain.rng) finds in ``xml``; empty when valid."""
    schema = _schema()
    doc = etree.fromstring(xml.encode())
    if schema.validate(doc):
        return []
    return [f"line {e.line}: {e.message}" for e in schema.error_log]


_SCHEMA: etree.RelaxNG | None = None


def _schema() -> etree.RelaxNG:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = etree.RelaxNG(etree.parse("/usr/share/libvirt/schemas/domain.rng"))
    return _SCHEMA
