"""<interface> devices: libvirt networks, host bridges and macvtap (type='direct').

Interfaces are matched by MAC address (else by position); other interface types are left alone, and so
is the transient half of a failover pair (<teaming type='transient'>: it shares its partner's MAC).
A model change keeps the interface's <address> (all three models are PCI devices) unless a non-virtio
model cannot sit there (ccw, virtio-mmio), and drops <driver>, whose settings are all virtio-net's.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.spec.vm_devices import NicSpec
from kvmkit.xml.util import ensure, insert_ordered, remove

FIELDS = ("nics",)
_SOURCE_ATTR = {"network": "network", "bridge": "bridge", "direct": "dev"}


def _parse(el: etree._Element) -> NicSpec | None:
    kind = el.get("type")
    if kind not in _SOURCE_ATTR or el.find("teaming[@type='transient']") is not None:
        return None
    source = el.find("source")
    mac = el.find("mac")
    model = el.find("model")
    data: dict[str, Any] = {"type": kind}
    if source is not None and source.get(_SOURCE_ATTR[kind]):
        data["source"] = source.get(_SOURCE_ATTR[kind])
        if kind == "direct" and source.get("mode"):
            data["mode"] = source.get("mode")
    if mac is not None:
        data["mac"] = mac.get("address")
    if model is not None:
        data["model"] = model.get("type")
    try:
        return NicSpec.model_validate(data)
    except ValueError:
        return None


def managed(devices: etree._Element | None) -> list[tuple[etree._Element, NicSpec]]:
    if devices is None:
        return []
    out: list[tuple[etree._Element, NicSpec]] = []
    macs: set[str] = set()
    for el in devices.findall("interface"):
        spec = _parse(el)
        if spec is None or (spec.mac is not None and spec.mac in macs):  # a MAC seen before: left alone
            continue
        if spec.mac:
            macs.add(spec.mac)
        out.append((el, spec))
    return out


def read(root: etree._Element) -> dict[str, Any]:
    return {"nics": [spec for _el, spec in managed(root.find("devices"))]}


def write(root: etree._Element, spec: Any) -> None:
    devices = ensure(root, "devices")
    current = managed(devices)
    by_mac = {n.mac: el for el, n in current if n.mac}
    unused = [el for el, _n in current]
    pairs: list[tuple[NicSpec, etree._Element | None]] = []
    for nic in spec.nics:
        el = by_mac.get(nic.mac) if nic.mac else None
        if el is None and not nic.mac:
            el = next((e for e, n in current if e in unused and not n.mac), None)
        if el is not None:
            unused.remove(el)
        pairs.append((nic, el))
    # unmatched existing interfaces take unmatched spec NICs in order (a changed MAC), the rest go
    for i, (nic, el) in enumerate(pairs):
        if el is None and unused:
            pairs[i] = (nic, unused.pop(0))
    for el in unused:
        remove(el)
    for nic, el in pairs:
        if el is None:
            el = insert_ordered(devices, etree.Element("interface"))
            _fill(el, nic, None)
        else:
            old = _parse(el)
            if old != nic:
                _fill(el, nic, old)


def _fill(el: etree._Element, nic: NicSpec, old: NicSpec | None) -> None:
    el.set("type", nic.type)
    if old is None or old.mac != nic.mac:
        mac = el.find("mac")
        if nic.mac:
            if mac is None:
                mac = etree.Element("mac")
                el.insert(0, mac)
            mac.set("address", nic.mac)
        else:
            remove(mac)
    if old is None or (old.type, old.source, old.mode) != (nic.type, nic.source, nic.mode):
        remove(el.find("source"))
        attrs = {_SOURCE_ATTR[nic.type]: nic.source}
        if nic.type == "direct":
            attrs["mode"] = nic.mode
        source = etree.Element("source", **attrs)
        mac = el.find("mac")
        if mac is not None:
            mac.addnext(source)
        else:
            el.insert(0, source)
    if old is None or old.model != nic.model:
        model = el.find("model")
        if model is None:
            model = etree.SubElement(el, "model")
        if nic.model != "virtio":
            remove(el.find("driver"))
            address = el.find("address")
            if address is not None and address.get("type", "pci") != "pci":
                remove(address)
        model.set("type", nic.model)
