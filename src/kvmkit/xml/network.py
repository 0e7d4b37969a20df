"""libvirt network XML from a NetworkSpec, and the facts kvmkit reads back from any network XML (lxml only)."""

from __future__ import annotations

import ipaddress
from typing import Any

from lxml import etree

from kvmkit.spec.network import DhcpHost, NetworkSpec

# ---------------------------------------------------------------- spec -> XML


def spec_to_xml(spec: NetworkSpec) -> str:
    """libvirt <network> XML for ``spec`` (subnet must be set for nat/isolated/route)."""
    net = etree.Element("network")
    etree.SubElement(net, "name").text = spec.name
    if spec.mode == "bridge":
        etree.SubElement(net, "forward", mode="bridge")
        etree.SubElement(net, "bridge", name=spec.bridge or spec.name)
        return etree.tostring(net, encoding="unicode")
    if spec.subnet is None:
        raise ValueError("spec_to_xml needs a subnet for nat/isolated/route networks")
    if spec.mode in ("nat", "route"):
        forward = etree.SubElement(net, "forward", mode=spec.mode)
        if spec.forward_dev:
            forward.set("dev", spec.forward_dev)
            etree.SubElement(forward, "interface", dev=spec.forward_dev)
        if spec.mode == "nat":
            etree.SubElement(etree.SubElement(forward, "nat"), "port", start="1024", end="65535")
    bridge = etree.SubElement(net, "bridge", stp="on", delay="0")
    if spec.bridge:
        bridge.set("name", spec.bridge)
    if spec.domain:
        etree.SubElement(net, "domain", name=spec.domain, localOnly="yes")
    if not spec.dns:
        etree.SubElement(net, "dns", enable="no")
    subnet = ipaddress.IPv4Network(spec.subnet)
    ip = etree.SubElement(net, "ip", address=str(spec.gateway), prefix=str(subnet.prefixlen))
    if spec.dhcp:
        dhcp = etree.SubElement(ip, "dhcp")
        etree.SubElement(dhcp, "range", start=str(spec.dhcp_start), end=str(spec.dhcp_end))
        for h in spec.hosts:
            host_el = etree.SubElement(dhcp, "host", mac=h.mac, ip=h.ip)
            if h.name:
                host_el.set("name", h.name)
    return etree.tostring(net, encoding="unicode")


def host_xml(host: DhcpHost) -> str:
    el = etree.Element("host", mac=host.mac, ip=host.ip)
    if host.name:
        el.set("name", host.name)
    return etree.tostring(el, encoding="unicode")


# ---------------------------------------------------------------- XML -> facts


def _prefix(ip_el: etree._Element) -> int | None:
    if ip_el.get("prefix"):
        return int(ip_el.get("prefix"))
    if ip_el.get("netmask"):
        return ipaddress.IPv4Network(f"0.0.0.0/{ip_el.get('netmask')}").prefixlen
    return 24 if ip_el.get("family", "ipv4") == "ipv4" else 64


def describe_xml(xml: str) -> dict[str, Any]:
    """Read the facts kvmkit shows from a libvirt network XML: mode, bridge, subnets, DHCP, reservations."""
    root = etree.fromstring(xml.encode())
    fwd = root.find("forward")
    mode = "isolated" if fwd is None else (fwd.get("mode") or "nat")
    bridge = root.find("bridge")
    info: dict[str, Any] = {
        "name": root.findtext("name"), "uuid": root.findtext("uuid"), "mode": mode,
        "bridge": bridge.get("name") if bridge is not None else None,
        "forward_dev": fwd.get("dev") if fwd is not None else None,
        "domain": root.find("domain").get("name") if root.find("domain") is not None else None,
        "dns": root.find("dns") is None or root.find("dns").get("enable", "yes") != "no",
        "subnets": [], "subnet": None, "gateway": None, "dhcp_range": None, "hosts": [],
    }
    for ip_el in root.findall("ip"):
        family = ip_el.get("family", "ipv4")
        address = ip_el.get("address")
        if not address:
            continue
        iface = ipaddress.ip_interface(f"{address}/{_prefix(ip_el)}")
        info["subnets"].append(str(iface.network))
        if family != "ipv4" or info["subnet"] is not None:
            continue
        info["subnet"], info["gateway"] = str(iface.network), address
        rng = ip_el.find("dhcp/range")
        if rng is not None:
            info["dhcp_range"] = {"start": rng.get("start"), "end": rng.get("end")}
        info["hosts"] = [{"mac": h.get("mac"), "ip": h.get("ip"), "name": h.get("name")}
                         for h in ip_el.findall("dhcp/host")]
    return info


def network_subnets(xml: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(s) for s in describe_xml(xml)["subnets"]]
