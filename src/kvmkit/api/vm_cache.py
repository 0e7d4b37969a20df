"""The server's VM list: the rows ``vm_query.list_vms`` returns and their JSON bytes, kept current.

GET /api/v1/vms answers from here. The list is rebuilt (one bulk libvirt call) when a request finds it

- invalidated: by a libvirt domain event (lifecycle incl. define/undefine/rename, balloon change, tunable
  change) on the event hub's connection or on the request connection; by any task event; by the end of
  any task body (before the task is recorded as finished, so a client that sees the task succeeded
  never gets the list from before it); by any change request this server answered (audit_mw); by a
  reconnect to libvirtd (a new request connection, or the hub's ``host`` events);
- older than ``max_age`` seconds (a safety net for changes libvirt sends no event for, such as a vCPU
  count changed in an inactive definition by another program): then the request that notices gets the
  old list while a background thread rebuilds it, unless it is older than ``stale_limit``;
- built on another libvirt connection than the current one.

Invalidations are counted (``_seq``); a rebuild records the count it started at, so an event that
arrives while a rebuild runs makes the next request rebuild again. Rebuilds are serialised: requests that
find the list stale wait for one rebuild instead of each calling libvirt.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt

DEFAULT_MAX_AGE_S = 2.0
DEFAULT_STALE_LIMIT_S = 10.0
log = logging.getLogger("kvmkit.api")

# domain events that change a row (name, state, vcpus, memory); each only invalidates the list
_EVENT_IDS = ("VIR_DOMAIN_EVENT_ID_LIFECYCLE", "VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE", "VIR_DOMAIN_EVENT_ID_TUNABLE")


def encode(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps(rows, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class VMListCache:
    def __init__(self, get_conn: Callable[[], Any], *, max_age: float = DEFAULT_MAX_AGE_S,
                 stale_limit: float = DEFAULT_STALE_LIMIT_S) -> None:
        self._get_conn = get_conn
        self.max_age = max_age
        self.stale_limit = stale_limit
        self._bg_running = False
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._build_lock = threading.Lock()
        self._built_seq = -1
        self._built_at = 0.0
        self._conn: Any = None
        self._snap: tuple[list[dict[str, Any]], bytes] = ([], b"[]")  # (rows, their JSON), swapped whole
        self._events_conn: Any = None
        self._event_ids: list[int] = []
        self.rebuilds = 0

    # invalidation ----------------------------------------------------------------------------------
    def invalidate(self, *_args: Any) -> None:
        """Mark the list stale (any signature: used directly as a libvirt or event-hub callback)."""
        with self._seq_lock:
            self._seq += 1

    def on_hub_event(self, event: dict[str, Any]) -> None:
        if event.get("type") in ("vm", "task", "host"):
            self.invalidate()

    # reading ---------------------------------------------------------------------------------------
    def fresh(self, conn: Any) -> bool:
        """True when the cached list may be served to a request that uses ``conn``."""
        return (self._built_seq == self._seq and conn is self._conn
                and time.monotonic() - self._built_at < self.max_age)

    def lookup(self, conn: Any) -> tuple[list[dict[str, Any]], bytes] | None:
        """The cached list if a request on ``conn`` may have it, else None (call :meth:`current`).

        A list that is only old (nothing invalidated it) but younger than ``stale_limit`` is still served
        while a background thread rebuilds it, so a slow libvirtd (a domain busy in a long job, its RPC
        workers all taken) does not hold up every request every ``max_age`` seconds."""
        if self._built_seq != self._seq or conn is not self._conn:
            return None
        age = time.monotonic() - self._built_at
        if age < self.max_age:
            return self._snap
        if age < self.stale_limit:
            self._refresh_in_background()
            return self._snap
        return None

    def _refresh_in_background(self) -> None:
        if self._bg_running:
            return
        self._bg_running = True

        def run() -> None:
            try:
                if self._build_lock.acquire(blocking=False):
                    try:
                        conn = self._get_conn()
                        if not self.fresh(conn):
                            self._rebuild(conn)
                    finally:
                        self._build_lock.release()
            except Exception:
                log.debug("background rebuild of the VM list failed", exc_info=True)
            finally:
                self._bg_running = False

        threading.Thread(target=run, name="kvmkit-vm-list", daemon=True).start()

    def cached(self) -> tuple[list[dict[str, Any]], bytes]:
        return self._snap

    def current(self) -> tuple[list[dict[str, Any]], bytes]:
        """The list, rebuilt first if stale (blocking: call it from a worker thread)."""
        conn = self._get_conn()
        if self.fresh(conn):
            return self.cached()
        with self._build_lock:
            conn = self._get_conn()
            if not self.fresh(conn):  # another request may have rebuilt it while we waited
                self._rebuild(conn)
            return self.cached()

    def _rebuild(self, conn: Any) -> None:
        from kvmkit.service.vm_query import list_vms

        if conn is not self._events_conn:
            self._watch(conn)
        seq = self._seq
        started = time.monotonic()
        rows = list_vms(conn, include_inactive=True)
        self._snap = (rows, encode(rows))
        self._conn, self._built_at, self._built_seq = conn, started, seq
        self.rebuilds += 1

    def _watch(self, conn: Any) -> None:
        """Register the row-changing domain events on the request connection (a new one after a reconnect)."""
        self._unwatch()
        ids = []
        for attr in _EVENT_IDS:
            event_id = getattr(libvirt, attr, None)
            if event_id is None:
                continue
            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, self.invalidate, None))
            except libvirt.libvirtError:
                pass  # a driver without that event: the age limit covers it
        self._events_conn, self._event_ids = conn, ids

    def _unwatch(self) -> None:
        old, ids = self._events_conn, self._event_ids
        self._events_conn, self._event_ids = None, []
        if old is None:
            return
        for cb_id in ids:
            try:
                old.domainEventDeregisterAny(cb_id)
            except Exception:
                pass  # the old connection is gone (closed or dead)

    def close(self) -> None:
        self._unwatch()


def filtered(rows: list[dict[str, Any]], granted: frozenset[str]) -> bytes:
    """The JSON of the rows a delegated user may see."""
    return encode([r for r in rows if r["name"] in granted])


def invalidating_runner(base: type[Any], cache: VMListCache) -> type[Any]:
    """A TaskRunner subclass whose task bodies invalidate the list when they end (before the task is
    recorded as succeeded or failed)."""

    class Runner(base):  # type: ignore[misc, valid-type]
        def submit(self, kind: str, target: str, body: Callable[[Any], Any], **kw: Any) -> dict[str, Any]:
            def wrapped(ctx: Any) -> Any:
                cache.invalidate()
                try:
                    return body(ctx)
                finally:
                    cache.invalidate()

            return super().submit(kind, target, wrapped, **kw)  # type: ignore[no-any-return]

    return Runner
