"""MAC addresses: generate unused ones in 52:54:00:xx:xx:xx and refuse clashes, naming the domain.

libvirt has no bulk call that returns every domain's MACs, so one pass over listAllDomains() reads each
definition (inactive XML, which holds every persistent NIC; live XML too for running domains, which may
carry hot-plugged NICs).
"""

from __future__ import annotations

import secrets

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.spec.common import validate_mac

PREFIX = "52:54:00"


def used_macs(conn: libvirt.virConnect) -> dict[str, str]:
    """Every MAC any domain on the host uses -> that domain's name."""
    used: dict[str, str] = {}
    with libvirt_errors("listing domains"):
        domains = conn.listAllDomains(0)
    for dom in domains:
        flags = [libvirt.VIR_DOMAIN_XML_INACTIVE]
        try:
            if dom.isActive():
                flags.append(0)
            for flag in flags:
                root = etree.fromstring(dom.XMLDesc(flag).encode())
                for mac in root.iterfind("devices/interface/mac"):
                    addr = (mac.get("address") or "").lower()
                    if addr:
                        used.setdefault(addr, dom.name())
        except libvirt.libvirtError:
            continue  # the domain vanished while we looked: its MACs are free again
    return used


def ensure_mac_free(conn: libvirt.virConnect, mac: str, ignore_domain: str | None = None,
                    used: dict[str, str] | None = None) -> None:
    """Raise Conflict naming the domain that already uses ``mac`` (other than ``ignore_domain``)."""
    mac = validate_mac(mac)
    owner = (used if used is not None else used_macs(conn)).get(mac)
    if owner is not None and owner != ignore_domain:
        raise Conflict(f"MAC {mac} is already used by domain '{owner}'",
                       hint="leave mac= out to get a free one, or pick another address")


def generate_mac(conn: libvirt.virConnect, used: dict[str, str] | None = None,
                 avoid: set[str] | None = None) -> str:
    """A random locally administered QEMU MAC (52:54:00:xx:xx:xx) no domain on the host uses."""
    taken = set(used if used is not None else used_macs(conn)) | (avoid or set())
    for _ in range(1000):
        mac = f"{PREFIX}:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))
        if mac not in taken:
            return mac
    raise OperationFailed("could not find a free MAC address after 1000 tries",  # pragma: no cover
                          hint="the 52:54:00 range is nearly full; give MACs explicitly")
