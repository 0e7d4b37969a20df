"""The host inventory: the ``hosts`` table, plus the local host that always exists.

The local host is named ``local`` and is whatever the caller's --connect / KVMKIT_CONNECT names (default
qemu:///system); it needs no row. A row named ``local`` (uri empty) only keeps its maintenance flag and limits.
Names are what users type (``--host b``, ``?host=b``); every other host's URI comes from its row.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from kvmkit.errors import Conflict, InvalidInput, NotFound
from kvmkit.hosts.record import LOCAL, HostRecord
from kvmkit.spec.host import HostLimits, HostSpec

if TYPE_CHECKING:
    from kvmkit.store.db import Store

__all__ = ["LOCAL", "HostRecord", "add", "get", "list_records", "remove", "set_limits", "set_maintenance"]


def _record(row: Any, local_uri: str | None = None) -> HostRecord:
    return HostRecord(row.name, local_uri if row.name == LOCAL and local_uri else row.uri, row.ssh_key,
                      bool(row.maintenance), row.max_memory_mib, row.cpu_overcommit)


def list_records(store: Store | None, local_uri: str) -> list[HostRecord]:
    """Every host: the local one first, then the others by name."""
    from sqlalchemy import select

    from kvmkit.store.models import Host

    local = HostRecord(LOCAL, local_uri)
    others: list[HostRecord] = []
    if store is not None:
        with store.session() as s:
            for row in s.scalars(select(Host).order_by(Host.name)):
                if row.name == LOCAL:
                    local = _record(row, local_uri)
                else:
                    others.append(_record(row))
    return [local, *others]


def get(store: Store | None, name: str, local_uri: str) -> HostRecord:
    for rec in list_records(store, local_uri):
        if rec.name == name:
            return rec
    raise NotFound(f"host '{name}' is not in the inventory",
                   hint="see `kvmkit host list`; add it with `kvmkit host add NAME URI`")


def add(store: Store, spec: HostSpec, local_uri: str) -> HostRecord:
    """Add a host (its URI is not checked here: see service.hosts.inventory.add_host)."""
    from sqlalchemy import select

    from kvmkit.store.models import Host

    if _same_uri(spec.uri, local_uri):
        raise Conflict(f"{spec.uri} is the local host's URI (host '{LOCAL}')",
                       hint="the local host is always there; give another host's URI")
    with store.session() as s:
        for row in s.scalars(select(Host)):
            if row.name == spec.name:
                raise Conflict(f"host '{spec.name}' is in the inventory already ({row.uri})",
                               hint=f"pick another name, or `kvmkit host remove {spec.name}` first")
            if row.name != LOCAL and _same_uri(row.uri, spec.uri):
                raise Conflict(f"{spec.uri} is in the inventory already, as host '{row.name}'",
                               hint="a host is added once; VM names are unique per host")
        row = Host(name=spec.name, uri=spec.uri, ssh_key=spec.ssh_key, maintenance=False,
                   max_memory_mib=spec.max_memory_mib, cpu_overcommit=spec.cpu_overcommit)
        s.add(row)
        s.flush()
        return _record(row)


def remove(store: Store, name: str) -> None:
    from sqlalchemy import select

    from kvmkit.store.models import Host

    if name == LOCAL:
        raise InvalidInput("the local host cannot be removed", hint="put it in maintenance instead")
    with store.session() as s:
        row = s.scalars(select(Host).where(Host.name == name)).first()
        if row is None:
            raise NotFound(f"host '{name}' is not in the inventory", hint="see `kvmkit host list`")
        s.delete(row)


def _row_for_update(s: Any, name: str) -> Any:
    from sqlalchemy import select

    from kvmkit.store.models import Host

    row = s.scalars(select(Host).where(Host.name == name)).first()
    if row is None and name == LOCAL:
        row = Host(name=LOCAL, uri="", maintenance=False)
        s.add(row)
    if row is None:
        raise NotFound(f"host '{name}' is not in the inventory", hint="see `kvmkit host list`")
    return row


def set_maintenance(store: Store, name: str, on: bool, local_uri: str) -> HostRecord:
    """Hosts in maintenance get no new VMs from placement (their VMs keep running and stay manageable)."""
    with store.session() as s:
        row = _row_for_update(s, name)
        row.maintenance = on
        s.flush()
        return _record(row, local_uri)


def set_limits(store: Store, name: str, limits: HostLimits, local_uri: str) -> HostRecord:
    with store.session() as s:
        row = _row_for_update(s, name)
        if limits.max_memory_mib is not None:
            row.max_memory_mib = limits.max_memory_mib or None
        if limits.cpu_overcommit is not None:
            row.cpu_overcommit = limits.cpu_overcommit or None
        s.flush()
        return _record(row, local_uri)


def _same_uri(a: str, b: str) -> bool:
    """The same libvirt host: equal but for a trailing slash, the default port or query parameters."""
    ports = {"tcp": 16509, "tls": 16514, "ssh": 22, "libssh": 22, "libssh2": 22}

    def norm(uri: str) -> tuple[str, str, int | None, str]:
        p = urlsplit(uri.strip())
        transport = p.scheme.partition("+")[2] or ("tls" if p.hostname else "")
        return p.scheme, (p.hostname or "").lower(), p.port or ports.get(transport), p.path.rstrip("/")

    return norm(a) == norm(b)
