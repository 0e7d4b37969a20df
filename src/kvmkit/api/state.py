"""What the server holds for its lifetime: store, task runner, event hub, libvirt connection, limiter."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from kvmkit.service.auth import RateLimiter
from kvmkit.service.events import EventHub
from kvmkit.service.tasks import TaskRunner
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
    limiter: RateLimiter = field(default_factory=RateLimiter)
    tls: bool = False
    recovered: list[dict[str, Any]] = field(default_factory=list)
