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
    """One shared libvirt connection, reopened when libvirtd went away (e.g. after a restart).

    Requests never hang on an absent or stuck daemon: opening a connection waits at most
    ``connect_timeout`` seconds (the attempt goes on in the background and its connection is used once it
    arrives), a request that finds another one reconnecting waits no longer than that either, and after a
    failed attempt requests are answered at once (HostError, HTTP 503 with a hint) until the back-off
    (0.5 s, doubling up to ``max_backoff``) has passed. The connection sends keepalives, so a daemon that
    stops answering (hung, or its host gone) closes it within about 15 s instead of blocking calls for ever.
    """

    KEEPALIVE = (5, 3)  # interval (s), missed answers before the connection is closed

    def __init__(self, uri: str, *, connect_timeout: float = 10.0, max_backoff: float = 2.0) -> None:
        self.uri = uri
        self.connect_timeout = connect_timeout
        self.max_backoff = max_backoff
        self._conn: Any = None
        self._lock = threading.Lock()
        self._pending: threading.Thread | None = None
        self._late: list[Any] = []  # [connection or error] of an attempt that outlived its deadline
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_error: Exception | None = None

    def get(self) -> Any:
        from kvmkit.errors import HostError

        if not self._lock.acquire(timeout=self.connect_timeout):
            raise _later(HostError(f"libvirtd at {self.uri} is not answering: a reconnect has been waiting for more "
                                   f"than {self.connect_timeout:.0f} s", hint=_HINT), self.connect_timeout)
        try:
            if self._alive(self._conn):
                return self._conn
            self._drop()
            self._conn = self._open()
            return self._conn
        finally:
            self._lock.release()

    @staticmethod
    def _alive(conn: Any) -> bool:
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except Exception:
            return False

    def _open(self) -> Any:
        """Connect within ``connect_timeout`` (the caller holds the lock), honouring the back-off."""
        import time

        from kvmkit.errors import HostError, KvmkitError

        if self._late:  # an attempt that missed its deadline has finished since
            late = self._late.pop()
            if not isinstance(late, Exception) and self._alive(late):
                return self._ready(late)
        now = time.monotonic()
        if now < self._retry_at:
            raise _later(HostError(f"cannot reach libvirtd at {self.uri} ({_reason(self._last_error)}); the server "
                                   f"tries again in {self._retry_at - now:.1f} s", hint=_HINT), self._retry_at - now)
        if self._pending is None or not self._pending.is_alive():
            self._pending = threading.Thread(target=self._attempt, name="kvmkit-libvirt-connect", daemon=True)
            self._pending.start()
        self._pending.join(self.connect_timeout)
        if self._pending.is_alive():
            self._failed(HostError(f"libvirtd at {self.uri} did not answer within {self.connect_timeout:.0f} s"))
            raise _later(HostError(f"libvirtd at {self.uri} did not answer within {self.connect_timeout:.0f} s",
                                   hint=_HINT), self._backoff)
        result = self._late.pop() if self._late else HostError(f"cannot connect to {self.uri}")
        if isinstance(result, Exception):
            self._failed(result)
            if isinstance(result, KvmkitError):
                raise _later(result, self._backoff)
            raise HostError(f"cannot connect to {self.uri}: {result}", hint=_HINT) from result
        return self._ready(result)

    def _attempt(self) -> None:
        from kvmkit.hypervisor.connection import connect

        try:
            conn = connect(self.uri)
        except Exception as err:
            self._late.append(err)
            return
        self._late.append(conn)

    def _ready(self, conn: Any) -> Any:
        self._backoff, self._retry_at, self._last_error = 0.0, 0.0, None
        if self.uri.startswith(("qemu", "xen", "lxc")):
            try:
                conn.setKeepAlive(*self.KEEPALIVE)  # needs the event loop (registered at server start)
            except Exception:
                pass
        return conn

    def _failed(self, err: Exception) -> None:
        import time

        self._last_error = err
        self._backoff = min(max(self._backoff * 2, 0.5), self.max_backoff)
        self._retry_at = time.monotonic() + self._backoff

    def peek(self) -> Any:
        """The open connection without reconnecting or waiting (None when there is none or it is dead):
        cheap enough for the event loop; fall back to :meth:`get` in a worker thread."""
        conn = self._conn
        return conn if self._alive(conn) else None

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


_HINT = ("is libvirtd running? start it with `libvirtd -d` (or `systemctl start libvirtd`); the server reconnects "
         "by itself: retry in a few seconds")


def _later(err: Any, seconds: float) -> Any:
    """Tell HTTP clients when to retry (the API's error handler sends ``retry_after`` as Retry-After)."""
    import math

    err.retry_after = max(1, math.ceil(seconds))
    return err


def _reason(err: Exception | None) -> str:
    from kvmkit.errors import KvmkitError

    if err is None:
        return "no answer"
    return err.message if isinstance(err, KvmkitError) else str(err)


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

    def changed(self, *, vms: bool = True) -> None:
        """A change request was answered: forget cached callers and (unless ``vms`` is false: the request
        changes no VM, e.g. a login) mark the VM list stale."""
        self.tokens.clear()
        if vms:
            self.vm_list.invalidate()
        self.access_generation += 1
