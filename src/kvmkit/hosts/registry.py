"""Host names to pooled connections: the inventory (read from the store) joined with the pool.

``Hosts.resolve(name)`` is how a front end turns ``--host b`` / ``?host=b`` into the handle of host b (None
or ``local``: the local host). The inventory is read again when a name is not known yet and at most every
``refresh_s`` seconds otherwise, so a host added by another process (the CLI next to a running server, a
second server on the same PostgreSQL) is found without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from kvmkit.hosts.pool import HostHandle, HostPool
from kvmkit.hosts.record import LOCAL, HostRecord

if TYPE_CHECKING:
    from kvmkit.store.db import Store

REFRESH_S = 2.0


class Hosts:
    """``store`` is where changes go (None: this process changes nothing); ``load`` reads the records (default:
    from ``store``; the CLI reads a SQLite inventory without SQLAlchemy, kvmkit.hosts.lean)."""

    def __init__(self, store: Store | None, pool: HostPool, *, refresh_s: float = REFRESH_S,
                 load: Callable[[], list[HostRecord]] | None = None) -> None:
        self.store = store
        self.pool = pool
        self.load = load
        self.refresh_s = refresh_s
        self._records: list[HostRecord] = [HostRecord(LOCAL, pool.local.uri)]
        self._read_at = 0.0
        self._lock = threading.Lock()

    @property
    def local_uri(self) -> str:
        return self.pool.local.uri

    def records(self, *, fresh: bool = False) -> list[HostRecord]:
        """Every host, the local one first (the inventory re-read when older than ``refresh_s``)."""
        if fresh or time.monotonic() - self._read_at > self.refresh_s:
            self.reload()
        return self._records

    def cached(self) -> list[HostRecord]:
        """The hosts as last read (no database access: for the event loop; the server re-reads them in the
        background, api/watch/hosts.py)."""
        return self._records

    def reload(self, *, retain: bool = True) -> list[HostRecord]:
        """Read the inventory again; with ``retain`` drop the handles of hosts gone from it (the server first
        drops what uses those handles, then calls :meth:`retain` itself)."""
        if self.load is not None:
            records = self.load()
        else:
            from kvmkit.hosts.inventory import list_records

            records = list_records(self.store, self.local_uri)
        with self._lock:
            self._records, self._read_at = records, time.monotonic()
        if retain:
            self.retain()
        for rec in records:
            if not rec.local:
                self.pool.handle(rec.name, rec.connect_uri)
        return records

    def retain(self) -> None:
        self.pool.retain({r.name for r in self._records})

    def multi(self) -> bool:
        """True when the inventory holds another host than the local one."""
        return len(self.records()) > 1

    def record(self, name: str | None) -> HostRecord:
        from kvmkit.errors import NotFound

        name = name or LOCAL
        for rec in self.records():
            if rec.name == name:
                return rec
        for rec in self.records(fresh=True):  # added since we last looked?
            if rec.name == name:
                return rec
        raise NotFound(f"host '{name}' is not in the inventory",
                       hint="see `kvmkit host list` (GET /api/v1/hosts); add it with `kvmkit host add NAME URI`")

    def resolve(self, name: str | None) -> HostHandle:
        """The pooled handle of host ``name`` (the local host for None or 'local'); NotFound otherwise."""
        if not name or name == LOCAL:
            return self.pool.local
        rec = self.record(name)
        return self.pool.handle(rec.name, rec.connect_uri)

    def handles(self) -> list[tuple[HostRecord, HostHandle]]:
        return [(rec, self.resolve(rec.name)) for rec in self.records()]
