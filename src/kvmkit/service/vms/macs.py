"""MAC addresses: generate unused ones in 52:54:00:xx:xx:xx and refuse clashes, naming the domain.

libvirt has no bulk call that returns every domain's MACs, so one pass over listAllDomains() reads each
definition (inactive XML, which holds every persistent NIC; live XML too for running domains, which may
carry hot-plugged NICs). That pass costs one RPC per domain, so concurrent creates share it: a caller
waits for a pass that *started after* it asked (``fresh_used_macs``), never for one that might have
missed a domain defined just before. MACs handed out but not yet in a definition are held in-process
(``reserve``/``release``) so ten creates running at once never pick the same address.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.spec.common import validate_mac

PREFIX = "52:54:00"


def used_macs(conn: libvirt.virConnect) -> dict[str, str]:
    """Every MAC any domain on the host uses -> that domain's name (one fresh pass over the domains)."""
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


@dataclass
class _Host:
    """Shared pass and reservations for one host (one libvirt URI)."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    scanning: bool = False
    last_started: float = -1.0  # monotonic start time of the newest finished pass
    last_used: dict[str, str] = field(default_factory=dict)
    held: dict[str, tuple[str, float | None]] = field(default_factory=dict)  # mac -> (owner, released at)


_hosts: dict[str, _Host] = {}
_hosts_lock = threading.Lock()


def _host(conn: libvirt.virConnect) -> _Host:
    uri = conn.getURI()
    # every test:///default connection is its own private host; real URIs name one host each
    key = f"{uri}#{id(conn)}" if uri.startswith("test:") else uri
    with _hosts_lock:
        return _hosts.setdefault(key, _Host())


def fresh_used_macs(conn: libvirt.virConnect) -> dict[str, str]:
    """Like :func:`used_macs` plus MACs reserved in this process, from a pass that began after this call.

    Concurrent callers share passes: at most one runs per host, and a waiter reuses the next one."""
    host = _host(conn)
    asked = time.monotonic()
    with host.cond:
        while host.last_started < asked:
            if not host.scanning:
                host.scanning = True
                break
            host.cond.wait()
        else:
            return _with_held(host, host.last_started)
    started = time.monotonic()
    try:
        used = used_macs(conn)
    except BaseException:
        with host.cond:
            host.scanning = False
            host.cond.notify_all()
        raise
    with host.cond:
        host.scanning = False
        host.last_started, host.last_used = started, used
        host.cond.notify_all()
        return _with_held(host, started)


def _with_held(host: _Host, started: float) -> dict[str, str]:
    """The pass's MACs plus held ones; a released MAC stays until a pass that began after its release
    (which sees the definition that now carries it). Caller holds ``host.cond``."""
    used = dict(host.last_used)
    for mac, (owner, released) in list(host.held.items()):
        if released is not None and released < started:
            del host.held[mac]
        else:
            used.setdefault(mac, owner)
    return used


def reserve(conn: libvirt.virConnect, owner: str, wanted: Iterable[str | None]) -> list[str]:
    """One MAC per entry of ``wanted``: given ones checked free, None gets a new one. All are held for
    ``owner`` until :func:`release`; Conflict names the domain (or running create) that has one already."""
    wanted = list(wanted)
    if not wanted:
        return []
    used = fresh_used_macs(conn)
    host = _host(conn)
    out: list[str] = []
    with host.cond:
        # A newer pass may have finished since ours and dropped holds whose domains it saw defined (a create
        # that reserved, defined and released meanwhile): take that pass and the holds under this one lock,
        # so no MAC falls between our pass and the holds.
        for mac, held_by in _with_held(host, host.last_started).items():
            used.setdefault(mac, held_by)
        try:
            for given in wanted:
                if given is None:
                    mac = generate_mac(conn, used=used, avoid={validate_mac(m) for m in wanted if m})
                else:
                    mac = validate_mac(given)
                    if mac in out:
                        raise Conflict(f"MAC {mac} is given to two NICs of '{owner}'",
                                       hint="give each NIC its own address, or leave mac= out")
                    if used.get(mac) not in (None, owner):
                        raise Conflict(f"MAC {mac} is already used by domain '{used[mac]}'",
                                       hint="leave mac= out to get a free one, or pick another address")
                used[mac] = owner
                host.held[mac] = (owner, None)
                out.append(mac)
        except BaseException:
            for mac in out:
                host.held.pop(mac, None)
            raise
    return out


def release(conn: libvirt.virConnect, macs: Iterable[str]) -> None:
    """End holds taken by :func:`reserve` once the domain is defined (or the create failed)."""
    host = _host(conn)
    now = time.monotonic()
    with host.cond:
        for mac in macs:
            if mac in host.held:
                host.held[mac] = (host.held[mac][0], now)


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
