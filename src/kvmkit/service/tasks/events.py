"""libvirt lifecycle events, fanned out to subscribers (the API's server-sent-event streams).

One thread runs libvirt's default event loop; another keeps an event connection open, registers a
lifecycle callback, and reconnects (with back-off) when libvirtd goes away — e.g. when it restarts — so
events resume without restarting kvmkit. ``virEventRegisterDefaultImpl`` must run before any connection
that should deliver events is opened: call :func:`register_event_impl` first thing at server start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import libvirt

log = logging.getLogger("kvmkit.events")

_impl_lock = threading.Lock()
_impl_started = False

LIFECYCLE = {
    0: "defined", 1: "undefined", 2: "started", 3: "suspended", 4: "resumed", 5: "stopped",
    6: "shutdown", 7: "pmsuspended", 8: "crashed",
}
# event -> detail -> why (virDomainEventStoppedDetailType, ...SuspendedDetailType, ...CrashedDetailType)
DETAILS = {
    "stopped": {0: "shutdown", 1: "destroyed", 2: "crashed", 3: "migrated", 4: "saved", 5: "failed",
                6: "from-snapshot"},
    "suspended": {0: "paused", 1: "migrated", 2: "io-error", 3: "watchdog", 4: "restored", 5: "from-snapshot",
                  6: "api-error", 7: "postcopy", 8: "postcopy-failed"},
    "crashed": {0: "panicked", 1: "crashloaded"},
}


def register_event_impl() -> None:
    """Register libvirt's default event loop implementation and run it in a daemon thread (once)."""
    global _impl_started
    with _impl_lock:
        if _impl_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def loop() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # never let the loop die
                    log.exception("libvirt event loop iteration failed")
                    time.sleep(0.5)

        threading.Thread(target=loop, name="kvmkit-libvirt-events", daemon=True).start()
        _impl_started = True


Subscriber = Callable[[dict[str, Any]], None]


class EventHub:
    """Receives libvirt events on ``uri`` and hands every event dict to each subscriber. ``host`` is the
    host's name in kvmkit's inventory, carried by every event (``local`` for the server's own libvirt)."""

    def __init__(self, uri: str, host: str = "local") -> None:
        self.uri = uri
        self.host = host
        self._subs: dict[int, Subscriber] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = threading.Event()
        self.connected = False
        self.reconnects = 0
        self._thread: threading.Thread | None = None

    # subscribers -----------------------------------------------------------------------------------
    def subscribe(self, fn: Subscriber) -> int:
        with self._lock:
            self._next += 1
            self._subs[self._next] = fn
            return self._next

    def unsubscribe(self, sub_id: int) -> None:
        with self._lock:
            self._subs.pop(sub_id, None)

    def publish(self, event: dict[str, Any]) -> None:
        event.setdefault("at", datetime.now(UTC).isoformat())
        with self._lock:
            subs = list(self._subs.values())
        for fn in subs:
            try:
                fn(event)
            except Exception:
                log.debug("subscriber failed", exc_info=True)

    # libvirt side ----------------------------------------------------------------------------------
    def start(self) -> None:
        register_event_impl()
        self._thread = threading.Thread(target=self._keep_connected, name="kvmkit-event-conn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._closed.set()

    def _on_lifecycle(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        name = LIFECYCLE.get(event, str(event))
        ev = {"type": "vm", "event": name, "detail": detail, "vm": dom.name(), "uuid": dom.UUIDString(),
              "host": self.host}
        if name in DETAILS:
            ev["reason"] = DETAILS[name].get(detail, str(detail))
        self.publish(ev)

    def _on_close(self, _conn: Any, reason: int, _opaque: Any) -> None:
        log.warning("libvirt event connection closed (reason %s)", reason)
        self._closed.set()

    def _keep_connected(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            conn = None
            try:
                from kvmkit.hypervisor.connection import connect

                conn = connect(self.uri)
                self._closed.clear()
                conn.registerCloseCallback(self._on_close, None)
                with_keepalive = self.uri.startswith(("qemu", "xen", "lxc"))
                if with_keepalive:
                    conn.setKeepAlive(2, 3)
                cb_id = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                    self._on_lifecycle, None)
                if self.connected is False and self.reconnects:
                    log.warning("libvirt event connection re-established")
                self.connected = True
                self.publish({"type": "host", "event": "connected", "uri": self.uri, "host": self.host,
                              "state": "up"})
                backoff = 0.5
                while not self._stop.is_set() and not self._closed.wait(1.0):
                    if not conn.isAlive():
                        break
                self.connected = False
                with _quiet():
                    conn.domainEventDeregisterAny(cb_id)
                if not self._stop.is_set():
                    self.reconnects += 1
                    self.publish({"type": "host", "event": "disconnected", "uri": self.uri, "host": self.host,
                                  "state": "down"})
            except Exception as err:
                self.connected = False
                log.debug("event connection to %s failed: %s", self.uri, err)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                if conn is not None:
                    with _quiet():
                        conn.unregisterCloseCallback()
                    with _quiet():
                        conn.close()


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return True
