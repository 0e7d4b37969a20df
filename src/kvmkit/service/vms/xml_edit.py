"""A VM's domain XML: read it, and replace its definition with XML the caller edited.

``replace_xml`` checks before it defines anything:

1. the text is well-formed XML with a ``<domain>`` root (parsed with lxml, no entities, no network);
2. it names the same VM (name, and UUID when it gives one): renaming is ``vm rename``, and another UUID
   would make libvirt define a second VM;
3. libvirt's own RelaxNG schema (``/usr/share/libvirt/schemas/domain.rng``) accepts it; every problem
   the schema reports is named (line and message);
4. it drops no device the running VM uses: a disk, NIC or graphics device that is attached to the running
   VM *and* in its current definition must stay in the new one (else the next start silently loses it,
   while the guest still uses it now). Detach it first (live and persistent), or shut the VM down.

Then it defines the XML with ``VIR_DOMAIN_DEFINE_VALIDATE`` (libvirt validates it again against the
schema and its own rules), reads the stored definition back and answers the unified diff between the
definition before and after (empty when libvirt stored the same thing), plus a summary of what kvmkit's
VM model reads from the new definition (or a warning when it cannot describe it).
"""

from __future__ import annotations

import difflib
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import InvalidInput, InvalidState, KvmkitError
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain

MAX_XML_BYTES = 1 << 20  # a domain definition is a few KiB; refuse megabytes of anything


def read_xml(conn: libvirt.virConnect, name: str, *, inactive: bool = False, secure: bool = False) -> dict[str, Any]:
    """The VM's XML: as it runs (default; the definition when shut off), or its definition (``inactive``).
    ``secure`` includes secrets such as VNC passwords (for callers allowed to replace the XML)."""
    dom = domain(conn, name)
    flags = (libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0) | (libvirt.VIR_DOMAIN_XML_SECURE if secure else 0)
    with libvirt_errors(f"reading the XML of VM {name}"):
        xml = dom.XMLDesc(flags)
        active = bool(dom.isActive())
    return {"name": name, "inactive": inactive or not active, "secure": secure, "xml": xml}


def _parse(xml: str) -> etree._Element:
    if len(xml.encode()) > MAX_XML_BYTES:
        raise InvalidInput(f"the XML is {len(xml.encode())} bytes; a domain definition is at most "
                           f"{MAX_XML_BYTES} bytes here", hint="send the domain XML only")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(xml.encode(), parser)
    except etree.XMLSyntaxError as err:
        raise InvalidInput(f"the XML is not well-formed: {err}", hint="check the XML syntax (an editor or "
                           "xmllint shows where)") from err
    if root.getroottree().docinfo.doctype:
        raise InvalidInput("the XML has a DOCTYPE (a DTD or entity declarations)",
                           hint="send the <domain> element alone; libvirt's domain XML has no DOCTYPE")
    if root.tag != "domain":
        raise InvalidInput(f"the XML's root element is <{root.tag}>, not <domain>",
                           hint="send a libvirt domain definition (GET /api/v1/vms/NAME/xml?inactive=true)")
    return root


def _same_vm(dom: libvirt.virDomain, root: etree._Element) -> None:
    name, uuid = dom.name(), dom.UUIDString()
    new_name = (root.findtext("name") or "").strip()
    if new_name != name:
        raise InvalidInput(f"the XML names VM '{new_name or '(no name)'}', not '{name}'",
                           hint=f"keep <name>{name}</name>; rename with `kvmkit vm rename {name} NEW` "
                                "(POST /api/v1/vms/NAME/rename)")
    new_uuid = (root.findtext("uuid") or "").strip()
    if new_uuid and new_uuid.lower() != uuid.lower():
        raise InvalidInput(f"the XML has UUID {new_uuid}, but VM '{name}' has {uuid}",
                           hint="keep the VM's <uuid> (or leave it out): another UUID would define a second VM")
    if not new_uuid:
        el = etree.Element("uuid")
        el.text = uuid
        name_el = root.find("name")
        assert name_el is not None
        name_el.addnext(el)


def schema_problems(root: etree._Element) -> list[str]:
    """What libvirt's domain schema finds wrong with ``root`` (empty: valid)."""
    from kvmkit.xml.domain import validate_with_schema

    return validate_with_schema(etree.tostring(root, encoding="unicode"))


def _valid(root: etree._Element) -> bool:
    from kvmkit.xml.domain import validate_with_schema

    return not validate_with_schema(etree.tostring(root, encoding="unicode"))


def locate_invalid(root: etree._Element) -> etree._Element | None:
    """The deepest element whose removal makes the document valid: the element the schema does not accept
    (libxml2's RelaxNG messages often name only an ancestor, e.g. 'Extra element devices in interleave').
    None when no single element is to blame (e.g. a required element is missing)."""
    found = None
    node = root
    while True:
        for child in node:
            if not isinstance(child.tag, str):
                continue  # comments, processing instructions
            parent, index = child.getparent(), node.index(child)
            assert parent is not None
            parent.remove(child)
            try:
                ok = _valid(root)
            finally:
                parent.insert(index, child)
            if ok:
                found = node = child
                break
        else:
            return found


def _describe(el: etree._Element) -> str:
    attrs = " ".join(f"{k}='{v}'" for k, v in el.attrib.items())
    tag = f"<{el.tag}{' ' + attrs if attrs else ''}>"
    path = el.getroottree().getpath(el)
    return f"{tag} (line {el.sourceline}, {path})" if el.sourceline else f"{tag} ({path})"


def _devices(root: etree._Element) -> dict[tuple[str, str], str]:
    """Devices a running guest depends on, by identity: disks by target, NICs by MAC, graphics by type;
    the value describes the device for messages."""
    out: dict[tuple[str, str], str] = {}
    for disk in root.iterfind("devices/disk"):
        dev = disk.find("target")
        if dev is not None and dev.get("dev"):
            src = disk.find("source")
            where = next((src.get(k) for k in ("file", "dev", "volume", "name") if src is not None and src.get(k)),
                         None)
            out[("disk", dev.get("dev", ""))] = f"{disk.get('device', 'disk')} {dev.get('dev')}" + (
                f" ({where})" if where else "")
    for iface in root.iterfind("devices/interface"):
        mac = iface.find("mac")
        if mac is not None and mac.get("address"):
            src = iface.find("source")
            on = next((src.get(k) for k in ("network", "bridge", "dev") if src is not None and src.get(k)), None)
            out[("interface", mac.get("address", "").lower())] = f"NIC {mac.get('address')}" + (
                f" on {on}" if on else "")
    for gfx in root.iterfind("devices/graphics"):
        out[("graphics", gfx.get("type", ""))] = f"{gfx.get('type')} graphics"
    return out


def dropped_in_use(live: etree._Element, current: etree._Element,
                   new: etree._Element) -> list[tuple[str, str]]:
    """(kind, description) of each device attached to the running VM and in its current definition that the
    new definition drops."""
    in_use = _devices(live)
    defined = _devices(current)
    kept = _devices(new)
    return [(key[0], in_use[key]) for key in in_use if key in defined and key not in kept]


def _how(kind: str, vm: str) -> str:
    return {"disk": f"detach the disk first (`kvmkit vm disk detach {vm} TARGET`, "
                    f"DELETE /api/v1/vms/{vm}/disks/TARGET)",
            "interface": f"detach the NIC first (`kvmkit vm nic detach {vm} MAC`, "
                         f"DELETE /api/v1/vms/{vm}/nics/MAC)",
            "graphics": "graphics cannot be hot-unplugged"}[kind]


def _diff(before: str, after: str) -> str:
    return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), "current definition",
                                          "new definition", lineterm=""))


def _summary(xml: str) -> tuple[dict[str, Any] | None, list[str]]:
    """What kvmkit's VM model reads from the stored XML, or a warning saying why it cannot."""
    from pydantic import ValidationError

    from kvmkit.xml.domain import xml_to_spec

    try:
        spec = xml_to_spec(xml)
    except (KvmkitError, ValidationError, ValueError) as err:
        text = err.message if isinstance(err, KvmkitError) else str(err).splitlines()[0]
        return None, [f"libvirt accepted the definition, but kvmkit's VM model cannot describe it: {text}; "
                      "kvmkit commands that rewrite the definition (vm set ...) may refuse this VM"]
    return {"title": spec.title, "description": spec.description, "vcpus": spec.vcpus,
            "max_vcpus": spec.max_vcpus, "memory_mib": spec.memory_mib, "max_memory_mib": spec.max_memory_mib,
            "disks": [d.target for d in spec.disks if d.target], "nics": [n.mac for n in spec.nics if n.mac],
            "graphics": spec.graphics.type if spec.graphics else None}, []


def _define(conn: libvirt.virConnect, name: str, xml: str) -> libvirt.virDomain:
    """defineXML with libvirt's validation; a refusal of the caller's XML is bad input (422), not a failure."""
    from kvmkit.errors import OperationFailed
    from kvmkit.hypervisor.errors import translate

    try:
        return conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    except libvirt.libvirtError as err:
        mapped = translate(err, f"libvirt refused the new definition of VM {name}")
        if isinstance(mapped, OperationFailed):
            mapped = InvalidInput(mapped.message)
        if isinstance(mapped, InvalidInput):
            mapped.hint = "fix what libvirt names; nothing was changed"
        raise mapped from err


def replace_xml(conn: libvirt.virConnect, name: str, xml: str) -> dict[str, Any]:
    """Replace VM ``name``'s definition with ``xml`` (checked as the module docstring says); returns
    ``{name, changed, diff, running, applies, summary, warnings}``."""
    dom = domain(conn, name)
    root = _parse(xml)
    _same_vm(dom, root)
    problems = schema_problems(root)
    if problems:
        culprit = locate_invalid(root)
        where = f"it does not accept {_describe(culprit)}" if culprit is not None else "it"
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise InvalidInput(f"libvirt's domain schema rejects the XML: {where} (schema: {shown})",
                           hint="fix the named elements (the schema is /usr/share/libvirt/schemas/domain.rng; "
                                "`virt-xml-validate FILE domain` checks a file)")
    with libvirt_errors(f"reading the definition of VM {name}"):
        running = bool(dom.isActive())
        persistent = bool(dom.isPersistent())
        before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE) if persistent else ""
        live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE) if running else None
    if live is not None and before:
        dropped = dropped_in_use(etree.fromstring(live.encode()), etree.fromstring(before.encode()), root)
        if dropped:
            kinds = {kind for kind, _ in dropped}
            how = "; ".join(_how(k, name) for k in ("disk", "interface", "graphics") if k in kinds)
            raise InvalidState(
                f"VM {name} is running and uses {', '.join(d for _, d in dropped)}, which the new definition "
                "drops: the guest would lose it at its next start while it still uses it now",
                hint=f"{how}; or shut the VM down, then replace the XML")
    dom = _define(conn, name, etree.tostring(root, encoding="unicode"))
    with libvirt_errors(f"reading the new definition of VM {name}"):
        after = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    summary, warnings = _summary(after)
    diff = _diff(before, after)
    if running and diff:
        warnings.append("the VM is running: the new definition applies from its next start")
    return {"name": name, "changed": bool(diff), "diff": diff, "running": running,
            "applies": "next start" if running else "now", "summary": summary, "warnings": warnings}
