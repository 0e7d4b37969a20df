"""kvmkit's own data in <metadata><kvmkit:vm xmlns:kvmkit="https://kvmkit.dev/xmlns/vm/1">; other apps'
metadata is never touched."""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.xml.util import ensure, remove

NS = "https://kvmkit.dev/xmlns/vm/1"
PREFIX = "kvmkit"
FIELDS = ("metadata",)


def _vm(root: etree._Element) -> etree._Element | None:
    meta = root.find("metadata")
    return None if meta is None else meta.find(f"{{{NS}}}vm")


def read(root: etree._Element) -> dict[str, Any]:
    vm = _vm(root)
    data: dict[str, str] = {}
    if vm is not None:
        for child in vm:
            if isinstance(child.tag, str) and child.tag.startswith(f"{{{NS}}}"):
                data[etree.QName(child).localname] = child.text or ""
    return {"metadata": data}


def write(root: etree._Element, spec: Any) -> None:
    vm = _vm(root)
    if not spec.metadata:
        if vm is not None:
            meta = vm.getparent()
            remove(vm)
            if meta is not None and len(meta) == 0:
                remove(meta)
        return
    if vm is None:
        vm = etree.SubElement(ensure(root, "metadata"), f"{{{NS}}}vm", nsmap={PREFIX: NS})
    for child in list(vm):
        remove(child)
    for key, value in spec.metadata.items():
        etree.SubElement(vm, f"{{{NS}}}{key}").text = value
