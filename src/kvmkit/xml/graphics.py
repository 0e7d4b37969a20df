"""<graphics>: one VNC or SPICE display (listen address, password, fixed port or autoport), or none."""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.spec.vm_devices import GraphicsSpec
from kvmkit.xml.util import ensure, insert_ordered, remove

FIELDS = ("graphics",)


def _parse(el: etree._Element) -> GraphicsSpec | None:
    if el.get("type") not in ("vnc", "spice"):
        return None
    listen_el = el.find("listen[@type='address']")
    listen = el.get("listen") or (listen_el.get("address") if listen_el is not None else None)
    port = el.get("port")
    data: dict[str, Any] = {"type": el.get("type"), "password": el.get("passwd")}
    if listen:
        data["listen"] = listen
    if el.get("autoport") != "yes" and port and port != "-1":
        data["port"] = int(port)
    try:
        return GraphicsSpec.model_validate(data)
    except ValueError:
        return None


def read(root: etree._Element) -> dict[str, Any]:
    for el in root.findall("devices/graphics"):
        parsed = _parse(el)
        if parsed is not None:
            return {"graphics": parsed}
    return {"graphics": None}


def write(root: etree._Element, spec: Any) -> None:
    devices = ensure(root, "devices")
    els = [el for el in devices.findall("graphics") if _parse(el) is not None]
    want: GraphicsSpec | None = spec.graphics
    if want is None:
        for el in els:
            remove(el)
        return
    for el in els[1:]:
        remove(el)
    el = els[0] if els else None
    if el is not None and _parse(el) == want:
        return
    if el is None or el.get("type") != want.type:
        if el is not None:
            remove(el)
        el = insert_ordered(devices, etree.Element("graphics"))
    el.set("type", want.type)
    if want.port is None:
        el.set("port", "-1")
        el.set("autoport", "yes")
    else:
        el.set("port", str(want.port))
        el.set("autoport", "no")
    el.set("listen", want.listen)
    listen = el.find("listen")
    if listen is None:
        listen = etree.SubElement(el, "listen")
    listen.set("type", "address")
    listen.set("address", want.listen)
    if want.password:
        el.set("passwd", want.password)
    else:
        el.attrib.pop("passwd", None)
