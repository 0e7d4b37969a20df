"""Memory: <memory> (max, the balloon ceiling), <currentMemory>, <memoryBacking> (huge pages, KSM opt-out)."""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.xml.util import ensure, remove, set_mib, size_to_mib

FIELDS = ("memory_mib", "max_memory_mib", "hugepages", "nosharepages")


def read(root: etree._Element) -> dict[str, Any]:
    maximum = size_to_mib(root.find("memory"))
    current = size_to_mib(root.find("currentMemory"))
    backing = root.find("memoryBacking")
    return {
        "memory_mib": current if current is not None else maximum,
        "max_memory_mib": maximum,
        "hugepages": backing is not None and backing.find("hugepages") is not None,
        "nosharepages": backing is not None and backing.find("nosharepages") is not None,
    }


def write(root: etree._Element, spec: Any) -> None:
    old = read(root)
    if (old["memory_mib"], old["max_memory_mib"]) != (spec.memory_mib, spec.max_memory_mib):
        set_mib(ensure(root, "memory"), spec.max_memory_mib)
        set_mib(ensure(root, "currentMemory"), spec.memory_mib)
    if (old["hugepages"], old["nosharepages"]) != (spec.hugepages, spec.nosharepages):
        backing = ensure(root, "memoryBacking")
        for tag in ("hugepages", "nosharepages"):
            el = backing.find(tag)
            if getattr(spec, tag) and el is None:
                etree.SubElement(backing, tag)
            elif not getattr(spec, tag) and el is not None:
                remove(el)
        if len(backing) == 0 and not backing.attrib:
            remove(backing)
