"""Memory: <memory> (max, the balloon ceiling), <currentMemory>, <memoryBacking> (huge pages, KSM opt-out).

libvirt computes <memory> itself from NUMA cells (<cpu><numa>) when there are any, and counts memory
devices (DIMMs, virtio-mem) into it; so a new size is refused for a VM with NUMA cells, and must leave
room for its memory devices.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.xml.util import amount_to_mib, ensure, remove, set_mib, size_to_mib

FIELDS = ("memory_mib", "max_memory_mib", "hugepages", "nosharepages", "memory_source")


def read(root: etree._Element) -> dict[str, Any]:
    maximum = size_to_mib(root.find("memory"))
    current = size_to_mib(root.find("currentMemory"))
    backing = root.find("memoryBacking")
    return {
        # libvirt lowers a currentMemory above memory to it
        "memory_mib": min(current, maximum) if current is not None and maximum is not None else current or maximum,
        "max_memory_mib": maximum if maximum is not None else current,
        "hugepages": backing is not None and backing.find("hugepages") is not None,
        "nosharepages": backing is not None and backing.find("nosharepages") is not None,
        "memory_source": backing.find("source").get("type") if backing is not None
        and backing.find("source") is not None else None,
    }


def write(root: etree._Element, spec: Any) -> None:
    old = read(root)
    if (old["memory_mib"], old["max_memory_mib"]) != (spec.memory_mib, spec.max_memory_mib):
        if old["max_memory_mib"] != spec.max_memory_mib:
            _check_total(root, spec.max_memory_mib)
        set_mib(ensure(root, "memory"), spec.max_memory_mib)
        set_mib(ensure(root, "currentMemory"), spec.memory_mib)
    want = (spec.hugepages, spec.nosharepages, spec.memory_source)
    if (old["hugepages"], old["nosharepages"], old["memory_source"]) != want:
        backing = ensure(root, "memoryBacking")
        for tag in ("hugepages", "nosharepages"):
            el = backing.find(tag)
            if getattr(spec, tag) and el is None:
                el = etree.SubElement(backing, tag)
                if tag == "hugepages" and spec.memory_source == "memfd":  # memfd needs an explicit page size
                    etree.SubElement(el, "page", size="2048", unit="KiB")
            elif not getattr(spec, tag) and el is not None:
                remove(el)
        if old["memory_source"] != spec.memory_source:
            el = backing.find("source")
            if el is not None:
                remove(el)
            if spec.memory_source:
                etree.SubElement(backing, "source", type=spec.memory_source)  # the schema interleaves children
        if len(backing) == 0 and not backing.attrib:
            remove(backing)


def _check_total(root: etree._Element, mib: int) -> None:
    cells = root.findall("cpu/numa/cell[@memory]")
    if cells:
        total = sum(amount_to_mib(c.get("memory", "0"), c.get("unit"), "cell") for c in cells)
        raise InvalidInput(f"this VM's memory is the sum of its {len(cells)} NUMA cell(s) ({total} MiB), so it cannot "
                           "be set alone", hint="resize the cells in its XML (kvmkit vm xml NAME --replace FILE), "
                           "or change only the current memory")
    devices = sum(size_to_mib(s) or 0 for s in root.iterfind("devices/memory/target/size"))
    if devices and mib <= devices:
        raise InvalidInput(f"max memory {mib} MiB does not leave room for the VM's memory devices ({devices} MiB)",
                           hint=f"give more than {devices} MiB, or remove memory devices first")
