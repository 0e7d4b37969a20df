"""The few read-only libvirt calls the CLI's lean paths need, made through ``libvirtmod`` directly.

``libvirtmod`` is the C half of libvirt-python; ``libvirt.py`` wraps it in classes and costs ~25 ms to
import (most of it ``typing``), more than virsh needs to answer ``list --all``. The lean path only
reads: it opens a connection, takes the bulk domain stats, and (for running VMs) the DHCP leases and
MAC addresses. Every call returns None on a libvirt error; the caller then falls back to the normal
path, which reports the error properly. A test checks the numbers below against libvirt-python.
"""

from __future__ import annotations

import libvirtmod

TYPE_CHECKING = False  # not typing's: importing typing costs a few ms here
if TYPE_CHECKING:
    from typing import Any

LIST_NETWORKS_ACTIVE = 2  # virConnectListAllNetworksFlags
IP_ADDR_TYPE_IPV4 = 0  # virIPAddrType


class LeanError(Exception):
    """A libvirt call failed: let the normal path run and report it."""


def _check(value: Any) -> Any:
    if value is None:
        raise LeanError()
    return value


def open_connection(uri: str) -> Any:
    libvirtmod.virRegisterErrorHandler(lambda _ctx, _err: None, None)  # kvmkit reports errors itself
    return _check(libvirtmod.virConnectOpen(uri))


def uri_of(conn: Any) -> str:
    return str(_check(libvirtmod.virConnectGetURI(conn)))


def all_domain_stats(conn: Any, stats: int, flags: int) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(name, uuid, domain handle, stats) for every domain, from one virConnectGetAllDomainStats."""
    out = []
    for dom, values in _check(libvirtmod.virConnectGetAllDomainStats(conn, stats, flags)):
        out.append((_check(libvirtmod.virDomainGetName(dom)), _check(libvirtmod.virDomainGetUUIDString(dom)),
                    dom, values))
    return out


def lease_map(conn: Any) -> dict[str, str]:
    """MAC -> IPv4 address from the DHCP leases of every active network (as guest_ip.lease_map)."""
    out: dict[str, str] = {}
    for net in libvirtmod.virConnectListAllNetworks(conn, LIST_NETWORKS_ACTIVE) or []:
        for lease in libvirtmod.virNetworkGetDHCPLeases(net, None, 0) or []:
            if lease.get("type") == IP_ADDR_TYPE_IPV4 and lease.get("mac"):
                out[lease["mac"].lower()] = lease["ipaddr"]
    return out


def macs_of(dom: Any) -> list[str]:
    """The MAC addresses of a domain's interfaces, in XML order (as guest_ip.macs_of)."""
    from xml.etree import ElementTree

    root = ElementTree.fromstring(_check(libvirtmod.virDomainGetXMLDesc(dom, 0)))
    macs = []
    for iface in root.findall("devices/interface"):
        mac = iface.find("mac")
        address = (mac.get("address") or "").lower() if mac is not None else ""
        if address:
            macs.append(address)
    return macs
