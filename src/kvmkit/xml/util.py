"""Small lxml helpers: find-or-create children in libvirt's usual order, units, safe parsing."""

from __future__ import annotations

from lxml import etree

from kvmkit.errors import InvalidInput

# libvirt's order of <domain> children; new elements are inserted before the first later sibling.
DOMAIN_ORDER = [
    "name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory", "currentMemory",
    "blkiotune", "memtune", "memoryBacking", "vcpu", "vcpus", "iothreads", "iothreadids", "cputune",
    "numatune", "resource", "sysinfo", "bootloader", "bootloader_args", "os", "idmap", "features", "cpu",
    "clock", "on_poweroff", "on_reboot", "on_crash", "on_lockfailure", "pm", "perf", "devices",
]
DEVICE_ORDER = [
    "emulator", "disk", "filesystem", "controller", "lease", "hostdev", "redirdev", "smartcard",
    "interface", "input", "graphics", "sound", "audio", "video", "parallel", "serial", "console",
    "channel", "hub", "redirfilter", "watchdog", "memballoon", "rng", "tpm", "shmem", "memory", "iommu",
    "vsock", "panic", "crypto",
]
OS_ORDER = ["type", "firmware", "loader", "nvram", "kernel", "initrd", "cmdline", "dtb", "acpi", "boot",
            "bootmenu", "smbios", "bios"]

_ORDERS = {"domain": DOMAIN_ORDER, "devices": DEVICE_ORDER, "os": OS_ORDER}

_UNIT_BYTES = {
    "b": 1, "bytes": 1, "kb": 1000, "k": 1024, "kib": 1024, "mb": 1000**2, "m": 1024**2, "mib": 1024**2,
    "gb": 1000**3, "g": 1024**3, "gib": 1024**3, "tb": 1000**4, "t": 1024**4, "tib": 1024**4,
}


def parse(xml: str) -> etree._Element:
    """Parse domain XML without resolving entities or fetching anything."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False)
    try:
        return etree.fromstring(xml.encode() if isinstance(xml, str) else xml, parser)
    except etree.XMLSyntaxError as err:
        raise InvalidInput(f"domain XML is not well-formed: {err}", hint="check the XML syntax") from err


def to_string(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode")


def insert_ordered(parent: etree._Element, child: etree._Element) -> etree._Element:
    """Insert ``child`` before the first sibling that libvirt orders after it (else append).

    Whitespace is left alone: libvirt re-indents what it stores, and spec_to_xml indents its output.
    """
    order = _ORDERS.get(parent.tag)
    if order and child.tag in order:
        rank = order.index(child.tag)
        same = [c for c in parent if c.tag == child.tag]
        if same:  # after the last sibling of the same tag, so repeated devices keep their order
            same[-1].addnext(child)
            return child
        for sib in parent:
            if isinstance(sib.tag, str) and sib.tag in order and order.index(sib.tag) > rank:
                sib.addprevious(child)
                return child
    parent.append(child)
    return child


def ensure(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    """The first ``tag`` child of ``parent``, created (in order) if missing; ``attrs`` set on it."""
    el = parent.find(tag)
    if el is None:
        el = insert_ordered(parent, etree.Element(tag))
    for k, v in attrs.items():
        el.set(k, v)
    return el


def new_child(parent: etree._Element, tag: str, **attrs: str) -> etree._Element:
    return insert_ordered(parent, etree.Element(tag, **attrs))


def remove(el: etree._Element | None) -> None:
    if el is not None and el.getparent() is not None:
        el.getparent().remove(el)


def set_text_child(parent: etree._Element, tag: str, value: str | None) -> None:
    """Set ``<tag>value</tag>`` or remove it when ``value`` is None."""
    el = parent.find(tag)
    if value is None:
        remove(el)
        return
    if el is None:
        el = new_child(parent, tag)
    el.text = value


def size_to_mib(el: etree._Element | None) -> int | None:
    if el is None or el.text is None:
        return None
    return amount_to_mib(el.text, el.get("unit"), el.tag)


def amount_to_mib(value: str, unit: str | None, where: str = "size") -> int:
    """``value`` in ``unit`` (libvirt's default KiB) as MiB, rounded down."""
    factor = _UNIT_BYTES.get((unit or "KiB").lower())
    if factor is None:
        raise InvalidInput(f"unknown memory unit {unit!r} in <{where}>")
    return int(value.strip()) * factor // 1024**2


def set_mib(el: etree._Element, mib: int) -> None:
    """Write a size in libvirt's canonical KiB form (only called when the value really changed)."""
    el.set("unit", "KiB")
    el.text = str(mib * 1024)


def yes(value: str | None) -> bool:
    return value in ("yes", "on")
