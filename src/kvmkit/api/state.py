"""What the server holds for its lifetime: store, task runner, event hub, libvirt connection, limiter,
the cached VM list, the cache of authenticated callers, and the metrics (request counts, exporter, sampler)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kvmkit.api.token_cache import TokenCache
from kvmkit.api.vm_cache import VMListCache
from kvmkit.service.access.auth import RateLimiter
from kvmkit.service.metrics.requests import RequestCounter
from kvmkit.service.tasks.events import EventHub
from kvmkit.service.tasks.runner import TaskRunner
from kvmkit.store.db import Store


class Hypervisor:
    """One shared libvirt connection, reopened when libvirtd went away (e.g. after a restart)."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: Any = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        from kvmkit.hypervisor.connection import connect

        with self._lock:
            alive = False
            if self._conn is not None:
                try:
                    alive = bool(self._conn.isAlive())
                except Exception:
                    alive = False
            if not alive:
                self._drop()
                self._conn = connect(self.uri)
            return self._conn

    def peek(self) -> Any:
        """The open connection without reconnecting or waiting (None when there is none or it is dead):
        cheap enough for the event loop; fall back to :meth:`get` in a worker thread."""
        conn = self._conn
        if conn is None:
            return None
        try:
            return conn if conn.isAlive() else None
        except Exception:
            return None

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        """Close and forget the connection (the caller holds the lock); a dead one may fail to close."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None


@dataclass
class ServerState:
    store: Store
    runner: TaskRunner
    hub: EventHub
    hv: Hypervisor
    vm_list: VMListCache
    limiter: RateLimiter = field(default_factory=RateLimiter)
    tls: bool = False
    recovered: list[dict[str, Any]] = field(default_factory=list)
    tokens: TokenCache = field(default_factory=TokenCache)
    event_clients: int = 0  # open /api/v1/events streams (changed on the event loop only)
    access_generation: int = 0  # bumped by every change request: open consoles check their access again
    requests: RequestCounter = field(default_factory=RequestCounter)  # kvmkit_api_requests_total
    exporter: Any = None  # the /metrics collector (kvmkit.service.metrics.exporter.Exporter), made at first scrape
    sampler: Any = None  # the history sampler thread (kvmkit.service.metrics.sampler.Sampler); None when off

    def changed(self) -> None:
        """A change request was answered: forget cached callers and mark the VM list stale."""
        self.tokens.clear()
        self.vm_list.invalidate()
        self.access_generation += 1
