"""Identity and lifecycle actions: domain type, name, uuid, title, description, on_poweroff/reboot/crash."""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.xml.util import set_text_child

FIELDS = ("name", "uuid", "title", "description", "virt_type", "on_poweroff", "on_reboot", "on_crash")
_ACTIONS = ("on_poweroff", "on_reboot", "on_crash")


def _text(root: etree._Element, tag: str) -> str | None:
    el = root.find(tag)
    return el.text if el is not None else None


def read(root: etree._Element) -> dict[str, Any]:
    dtype = root.get("type")
    out: dict[str, Any] = {
        "name": _text(root, "name"),
        "uuid": _text(root, "uuid"),
        "title": _text(root, "title"),
        "description": _text(root, "description"),
        "virt_type": dtype if dtype in ("kvm", "qemu") else None,
    }
    for tag in _ACTIONS:
        out[tag] = _text(root, tag)
    return out


def write(root: etree._Element, spec: Any) -> None:
    if spec.virt_type:
        root.set("type", spec.virt_type)
    for tag in ("name", "uuid", "title", "description", *_ACTIONS):
        value = getattr(spec, tag)
        if tag in ("title", "description") and value == "":
            value = None  # libvirt's schema has no empty <title/>: an empty title is no title
        if tag == "uuid" and value is None and root.find("uuid") is not None:
            continue  # keep the UUID libvirt assigned when the spec does not name one
        set_text_child(root, tag, value)
