"""Domain XML <-> VMSpec, with lxml only.

Each element family lives in its own module (general, memory, cpu, osboot, disks, nics, graphics,
chardevs, misc_devices, metadata, libosinfo) exposing ``FIELDS``, ``read(root) -> dict`` and ``write(root, spec)``.
``apply_spec`` re-reads the existing XML and calls ``write`` only for the families whose fields differ,
so everything kvmkit does not model (sound, video, USB, other apps' metadata ...) stays as it was.
"""

from __future__ import annotations

from typing import Any

from lxml import etree
from pydantic import ValidationError

from kvmkit.errors import InvalidInput
from kvmkit.spec.common import NAME_RE
from kvmkit.spec.vm import VMSpec
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
    """The VMSpec describing a domain's XML (parts kvmkit does not model are ignored).

    Never refuses a domain libvirt holds: a value a spec cannot hold is left out (read as unset)."""
    root = parse(xml)
    if root.tag != "domain":
        raise InvalidInput(f"expected <domain> XML, got <{root.tag}>")
    return _read_spec(root)


def _read_spec(root: etree._Element) -> VMSpec:
    data = {k: v for k, v in read_fields(root).items() if v is not None}
    name = data.get("name")
    if name is not None and not NAME_RE.match(name):
        # libvirt accepts names kvmkit would not create (spaces ...): describe the domain anyway
        return _lenient({**data, "name": "unnamed"}).model_copy(update={"name": name})
    return _lenient(data)


def _lenient(data: dict[str, Any]) -> VMSpec:
    """A spec from what was read: fields the spec refuses are dropped (their defaults stand instead)."""
    for _ in range(len(data)):
        try:
            return VMSpec.model_validate(data)
        except ValidationError as exc:
            bad = {e["loc"][0] for e in exc.errors() if e.get("loc") and e["loc"][0] in data} - {"name"}
            if not bad:
                break  # a cross-field rule: keep what was read without checking it
            data = {k: v for k, v in data.items() if k not in bad}
    defaults = {name: field.get_default(call_default_factory=True) for name, field in VMSpec.model_fields.items()
                if not field.is_required()}
    return VMSpec.model_construct(**{**defaults, **data})


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
    """``xml`` with the families where ``spec`` differs from what ``xml_to_spec`` reads rewritten;
    everything else untouched."""
    root = parse(xml)
    current = _read_spec(root)
    for family in FAMILIES:
        if any(_norm(getattr(current, f)) != _norm(getattr(spec, f)) for f in family.FIELDS):
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
