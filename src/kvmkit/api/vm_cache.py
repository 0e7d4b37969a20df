"""The server's VM list: the rows ``vm_query.list_vms`` returns and their JSON bytes, kept current.

GET /api/v1/vms answers from here. The list is rebuilt (one bulk libvirt call) when a request finds it

- invalidated: by a libvirt domain event (lifecycle incl. define/undefine/rename/stop, balloon change,
  tunable change) on the event hub's connection or on the request connection — except start, resume,
  suspend and pm-suspend of a listed VM, whose new state is certain: those patch the cached row (and a
  rebuild running meanwhile) at once, so requests need not wait for a busy libvirtd; by any task event; by the end of
  any task body (before the task is recorded as finished, so a client that sees the task succeeded
  never gets the list from before it); by any change request this server answered (middleware/audit.py); by a
  reconnect to libvirtd (a new request connection, or the hub's ``host`` events);
- older than ``max_age`` seconds (a safety net for changes libvirt sends no event for, such as a vCPU
  count changed in an inactive definition by another program): then the request that notices gets the
  old list while a background thread rebuilds it, unless it is older than ``stale_limit``;
- built on another libvirt connection than the current one.

Invalidations are counted (``_seq``); a rebuild records the count it started at, so an event that
arrives while a rebuild runs makes the next request rebuild again. Rebuilds are serialised: requests that
find the list stale wait for one rebuild instead of each calling libvirt.

Each host has its own list (:class:`HostVMLists`): the local host's is the one above; another host's is
built the same way on its pooled connection (its domain events registered on that connection), its rows'
``host`` saying the host's name. GET /api/v1/vms joins the lists' JSON bytes without decoding them.
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
DEFAULT_SOFT_LIMIT_S = 2.0
log = logging.getLogger("kvmkit.api")

# domain events that change a row (besides lifecycle events): they invalidate the list
_EVENT_IDS = ("VIR_DOMAIN_EVENT_ID_BALLOON_CHANGE", "VIR_DOMAIN_EVENT_ID_TUNABLE")
# lifecycle events (kvmkit.service.tasks.events names) after which a listed VM's state is certain and nothing else
# in its row changed: applied to the cached rows at once instead of invalidating them, so a busy libvirtd
# (other VMs starting) does not hold up requests. Every other lifecycle event invalidates the list.
PATCH_STATES = {"started": "running", "resumed": "running", "suspended": "paused", "pmsuspended": "pm-suspended"}
# the state reason each of those events gives with detail 0 (booted, unpaused, paused by a user); any other
# detail (e.g. suspended for an I/O error, started from a snapshot) invalidates the list, whose rebuild
# reads the reason
PATCH_REASONS = {"started": "booted", "resumed": "unpaused", "suspended": "user", "pmsuspended": "unknown"}


def encode(rows: list[dict[str, Any]]) -> bytes:
    return json.dumps(rows, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


class VMListCache:
    def __init__(self, get_conn: Callable[[], Any], *, max_age: float = DEFAULT_MAX_AGE_S,
                 stale_limit: float = DEFAULT_STALE_LIMIT_S, soft_limit: float = DEFAULT_SOFT_LIMIT_S,
                 host: str | None = None) -> None:
        self._get_conn = get_conn
        self.host = host  # the rows' ``host`` (None: the connection's URI, as list_vms says)
        self.soft_limit = soft_limit
        # how many clients follow /api/v1/events (they could have seen a libvirt event); set by the server
        self.observers: Callable[[], int] = lambda: 0
        self._soft_seq = 0
        self._built_soft = 0
        self._soft_since: float | None = None
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
        self._index: dict[str, int] = {}  # name -> position in the rows (changed with _snap, under _seq_lock)
        self._building = False
        self._patches: list[tuple[str, str, str]] = []  # (name, state, reason) patches made while a rebuild runs
        self._events_conn: Any = None
        self._event_ids: list[int] = []
        self.rebuilds = 0

    # invalidation ----------------------------------------------------------------------------------
    def invalidate(self, *_args: Any) -> None:
        """Mark the list stale (any signature: used directly as a libvirt or event-hub callback)."""
        with self._seq_lock:
            self._seq += 1

    def invalidate_foreign(self, *_args: Any) -> None:
        """A libvirt event that no request of this server caused. While nobody follows /api/v1/events no
        client can have seen it here, so it only marks the list for a background rebuild (requests keep
        getting the list for up to ``soft_limit`` seconds, like a change made by another program without an
        event); with event-stream clients it invalidates (they could GET right after seeing the event)."""
        if self.observers() > 0:
            self.invalidate()
            return
        with self._seq_lock:
            self._soft_seq += 1
            if self._soft_since is None:
                self._soft_since = time.monotonic()

    def on_hub_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "vm" and (event.get("host") or "local") != (self.host or "local"):
            return  # another host's VM
        if kind == "vm":
            self.on_lifecycle(str(event.get("vm")), str(event.get("event")), int(event.get("detail") or 0))
        elif kind in ("task", "host"):
            self.invalidate()

    def _on_libvirt_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        from kvmkit.service.tasks.events import LIFECYCLE

        self.on_lifecycle(dom.name(), LIFECYCLE.get(event, str(event)), detail)

    def on_lifecycle(self, name: str, event: str, detail: int = 0) -> None:
        """Apply a lifecycle event: patch the VM's state (and its reason) when it is certain (PATCH_STATES with
        detail 0), else invalidate."""
        state = PATCH_STATES.get(event) if detail == 0 else None
        reason = PATCH_REASONS.get(event, "unknown")
        with self._seq_lock:
            pos = self._index.get(name) if state else None
            if state is not None and pos is not None:
                rows, _ = self._snap
                if rows[pos]["state"] != state or rows[pos].get("state_reason") != reason:
                    rows = list(rows)
                    rows[pos] = {**rows[pos], "state": state, "state_reason": reason}
                    self._snap = (rows, encode(rows))
                if self._building:  # the rebuild may have read the state before this event: apply it there too
                    self._patches.append((name, state, reason))
                return
        self.invalidate_foreign()

    # reading ---------------------------------------------------------------------------------------
    def fresh(self, conn: Any) -> bool:
        """True when the cached list may be served to a request that uses ``conn``."""
        return (self._built_seq == self._seq and self._built_soft == self._soft_seq and conn is self._conn
                and time.monotonic() - self._built_at < self.max_age)

    def lookup(self, conn: Any) -> tuple[list[dict[str, Any]], bytes] | None:
        """The cached list if a request on ``conn`` may have it, else None (call :meth:`current`).

        A list that is only old (nothing invalidated it) but younger than ``stale_limit`` is still served
        while a background thread rebuilds it, so a slow libvirtd (a domain busy in a long job, its RPC
        workers all taken) does not hold up every request every ``max_age`` seconds."""
        if self._built_seq != self._seq or conn is not self._conn:
            return None
        now = time.monotonic()
        if self._built_soft != self._soft_seq:
            since = self._soft_since
            if since is not None and now - since < self.soft_limit:
                self._refresh_in_background()
                return self._snap
            return None
        age = now - self._built_at
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
        if conn is not self._events_conn:
            self._watch(conn)
        with self._seq_lock:
            seq, soft = self._seq, self._soft_seq
            self._building, self._patches = True, []
        started = time.monotonic()
        try:
            rows = bulk_rows(conn, self.host)
        except BaseException:
            with self._seq_lock:
                self._building, self._patches = False, []
            raise
        with self._seq_lock:
            index = {r["name"]: i for i, r in enumerate(rows)}
            for name, state, reason in self._patches:  # events that came during the bulk call, in order
                pos = index.get(name)
                if pos is not None:
                    rows[pos] = {**rows[pos], "state": state, "state_reason": reason}
            self._building, self._patches = False, []
            self._snap, self._index = (rows, encode(rows)), index
            self._conn, self._built_at, self._built_seq, self._built_soft = conn, started, seq, soft
            self._soft_since = None if soft == self._soft_seq else started  # events since: not older
        self.rebuilds += 1

    def _watch(self, conn: Any) -> None:
        """Register the row-changing domain events on the request connection (a new one after a reconnect)."""
        self._unwatch()
        ids = []
        callbacks: list[tuple[str, Callable[..., None]]] = [
            ("VIR_DOMAIN_EVENT_ID_LIFECYCLE", self._on_libvirt_lifecycle)]
        callbacks += [(attr, self.invalidate_foreign) for attr in _EVENT_IDS]
        for attr, callback in callbacks:
            event_id = getattr(libvirt, attr, None)
            if event_id is None:
                continue
            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, callback, None))
            except libvirt.libvirtError:
                pass  # a driver without that event: the hub's events and the age limit cover it
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


def bulk_rows(conn: Any, host: str | None = None) -> list[dict[str, Any]]:
    """The rows of ``vm_query.list_vms(conn)`` (same bulk call, same row function), but asked with
    VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT: libvirt then does not wait for domains busy in a job (another
    VM starting, migrating ...). The row's fields (state, current/maximum vCPUs and memory) need no job,
    so they are the same; the call is just not held up by other VMs' long operations."""
    from kvmkit.hypervisor.errors import libvirt_errors
    from kvmkit.service.vms.rows import LIST_STATS, row

    with libvirt_errors("listing VMs"):
        records = conn.getAllDomainStats(LIST_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
        host = host or conn.getURI()
    rows = [row(dom.name(), dom.UUIDString(), stats, host) for dom, stats in records]
    rows.sort(key=lambda r: r["name"])
    return rows


class HostVMLists:
    """The VM list of every host, by host name; the local host's is given, the others made when first asked."""

    def __init__(self, local: VMListCache, observers: Callable[[], int] | None = None) -> None:
        self.local = local
        self._lists: dict[str, VMListCache] = {"local": local}
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.observers = observers

    def of(self, name: str, handle: Any) -> VMListCache:
        """The list of host ``name`` (a new one when the host's handle changed, e.g. a new URI)."""
        if name == "local":
            return self.local
        with self._lock:
            cache = self._lists.get(name)
            if cache is None or self._handles.get(name) is not handle:
                if cache is not None:
                    cache.close()
                cache = VMListCache(handle.shared, host=name)  # the pooled connection: its events, peek()
                if self.observers is not None:
                    cache.observers = self.observers
                self._lists[name], self._handles[name] = cache, handle
            return cache

    def retain(self, names: set[str]) -> None:
        with self._lock:
            for name in [n for n in self._lists if n != "local" and n not in names]:
                self._lists.pop(name).close()
                self._handles.pop(name, None)

    def all(self) -> list[VMListCache]:
        return list(self._lists.values())

    def invalidate(self, *_args: Any) -> None:
        for cache in self.all():
            cache.invalidate()

    def on_hub_event(self, event: dict[str, Any]) -> None:
        for cache in self.all():
            cache.on_hub_event(event)

    def close(self) -> None:
        for cache in self.all():
            cache.close()


def join_bodies(bodies: list[bytes]) -> bytes:
    """One JSON array of the rows of several lists' JSON arrays (no decoding)."""
    inner = [b[1:-1] for b in bodies if len(b) > 2]
    return b"[" + b",".join(inner) + b"]"


def filtered(rows: list[dict[str, Any]], principal: Any) -> bytes:
    """The JSON of the rows a delegated user may see (grants are bound to the VM's UUID: a new VM of a
    granted name is not shown)."""
    return encode([r for r in rows if principal.may_see_vm(r["name"], r.get("uuid"))])


def invalidating_runner(base: type[Any], cache: VMListCache | HostVMLists) -> type[Any]:
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
