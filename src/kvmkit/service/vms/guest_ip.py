"""Find a running guest's IP addresses without logging in: DHCP leases of its libvirt networks first, then
the host's ARP/neighbour table (``ip -j neigh``), then the QEMU guest agent when the VM has one.

Each NIC is resolved by the first source that knows it; the result says which source answered.
"""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt
from lxml import etree

SOURCES = ("lease", "arp", "agent")


def _nics(dom: libvirt.virDomain) -> list[dict[str, Any]]:
    root = etree.fromstring(dom.XMLDesc(0).encode())
    nics = []
    for iface in root.findall("devices/interface"):
        mac = iface.find("mac")
        src = iface.find("source")
        target = iface.find("target")
        nics.append({
            "mac": (mac.get("address") or "").lower() if mac is not None else "",
            "type": iface.get("type"),
            "network": src.get("network") if src is not None else None,
            "bridge": src.get("bridge") if src is not None else None,
            "interface": target.get("dev") if target is not None else None,
        })
    return nics


def _has_agent(dom: libvirt.virDomain) -> bool:
    root = etree.fromstring(dom.XMLDesc(0).encode())
    for ch in root.findall("devices/channel"):
        target = ch.find("target")
        if target is not None and target.get("name") == "org.qemu.guest_agent.0":
            return True
    return False


def _entry(nic: dict[str, Any], addr: str, prefix: int | None, kind: str, source: str) -> dict[str, Any]:
    return {"interface": nic["interface"], "mac": nic["mac"], "network": nic["network"], "bridge": nic["bridge"],
            "addr": addr, "prefix": prefix, "type": kind, "source": source}


def _from_leases(conn: libvirt.virConnect, nic: dict[str, Any]) -> list[dict[str, Any]]:
    if not nic["network"] or not nic["mac"]:
        return []
    try:
        net = conn.networkLookupByName(nic["network"])
        if not net.isActive():
            return []
        raw = net.DHCPLeases(nic["mac"])
    except libvirt.libvirtError:
        return []
    return [_entry(nic, lease["ipaddr"], lease["prefix"],
                   "ipv4" if lease["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4 else "ipv6", "lease") for lease in raw]


def _from_neighbours(nic: dict[str, Any], table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for n in table:
        if (n.get("lladdr") or "").lower() != nic["mac"] or "FAILED" in n.get("state", []):
            continue
        kind = "ipv6" if ":" in n["dst"] else "ipv4"
        if kind == "ipv6" and n["dst"].lower().startswith("fe80:"):
            continue
        out.append(_entry(nic, n["dst"], None, kind, "arp"))
    return out


def _from_agent(dom: libvirt.virDomain, nics: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    try:
        raw = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT, 0)
    except libvirt.libvirtError:
        return {}  # no agent running in the guest (yet)
    by_mac = {n["mac"]: n for n in nics}
    out: dict[str, list[dict[str, Any]]] = {}
    for _name, data in (raw or {}).items():
        mac = (data.get("hwaddr") or "").lower()
        if mac not in by_mac:
            continue
        for a in data.get("addrs") or []:
            kind = "ipv4" if a["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4 else "ipv6"
            if kind == "ipv6" and a["addr"].lower().startswith("fe80:"):
                continue
            out.setdefault(mac, []).append(_entry(by_mac[mac], a["addr"], a.get("prefix"), kind, "agent"))
    return out


def guest_addresses(conn: libvirt.virConnect, dom: libvirt.virDomain, *,
                    sources: tuple[str, ...] = SOURCES) -> list[dict[str, Any]]:
    """Addresses of ``dom``'s NICs: [{interface, mac, network, bridge, addr, prefix, type, source}].

    Empty for a VM that is not running. Sources, tried in this order per NIC: ``lease`` (libvirt DHCP),
    ``arp`` (host neighbour table), ``agent`` (qemu-guest-agent); ``sources`` limits which are asked.
    """
    unknown = set(sources) - set(SOURCES)
    if unknown:
        from kvmkit.errors import InvalidInput

        raise InvalidInput(f"unknown address source(s): {', '.join(sorted(unknown))}",
                           hint=f"choose from {', '.join(SOURCES)}")
    if not dom.isActive():
        return []
    nics = [n for n in _nics(dom) if n["mac"]]
    found: list[dict[str, Any]] = []
    pending = []
    for nic in nics:
        got = _from_leases(conn, nic) if "lease" in sources else []
        found += got
        if not got:
            pending.append(nic)
    from kvmkit.service.net.networks import is_local

    if pending and "arp" in sources and is_local(conn):
        from kvmkit.errors import KvmkitError
        from kvmkit.host.bridges import neighbours

        table: list[dict[str, Any]] = []
        with contextlib.suppress(KvmkitError):
            table = neighbours()
        still = []
        for nic in pending:
            got = _from_neighbours(nic, table)
            found += got
            if not got:
                still.append(nic)
        pending = still
    if pending and "agent" in sources and _has_agent(dom):
        agent = _from_agent(dom, nics)
        for nic in pending:
            found += agent.get(nic["mac"], [])
    return found


def primary_ip(conn: libvirt.virConnect, dom: libvirt.virDomain) -> str | None:
    """The first IPv4 address found (for `vm list` / `vm show`), or None."""
    for a in guest_addresses(conn, dom):
        if a["type"] == "ipv4":
            return str(a["addr"])
    return None


def lease_map(conn: libvirt.virConnect) -> dict[str, str]:
    """MAC -> IPv4 address from the DHCP leases of every active libvirt network (one call per network)."""
    out: dict[str, str] = {}
    with contextlib.suppress(libvirt.libvirtError):
        for net in conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                for lease in net.DHCPLeases():
                    if lease.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 and lease.get("mac"):
                        out[lease["mac"].lower()] = lease["ipaddr"]
    return out


def macs_of(dom: libvirt.virDomain) -> list[str]:
    return [n["mac"] for n in _nics(dom) if n["mac"]]
