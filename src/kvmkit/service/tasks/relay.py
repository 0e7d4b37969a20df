"""Task events for every server on the database: what one server's tasks do appears on the event stream of
every other (``GET /api/v1/events``).

libvirt events need no relay — each server has its own event connection to libvirtd — but a task runs in
one server only. On PostgreSQL each task event is also sent with NOTIFY on the ``kvmkit_tasks`` channel
(the event itself as JSON, or only the task's id when it is too big for a notification: the receiver then
reads the task) and every server LISTENs on a connection of its own and publishes what other servers sent
to its own subscribers. NOTIFY rather than polling the tasks table: it costs nothing while nothing
happens, arrives within milliseconds, and in commit order. Notifications sent while a listener is
reconnecting are lost for it (as events are for an SSE client that reconnects): clients that must not miss
a task's end read ``GET /api/v1/tasks/{id}``. On SQLite (one server) events stay local.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from kvmkit.store import notify
from kvmkit.store.db import Store

log = logging.getLogger("kvmkit.tasks")
CHANNEL = "kvmkit_tasks"

Publish = Callable[[dict[str, Any]], None]


class TaskEventRelay:
    def __init__(self, store: Store, local: Publish, read_task: Callable[[str], dict[str, Any]]) -> None:
        self.store, self.local, self.read_task = store, local, read_task
        self.origin = uuid.uuid4().hex  # this process's notifications come back to it too: skipped
        self.enabled = notify.supported(store.engine)
        self._listener: notify.Listener | None = None

    def publish(self, event: dict[str, Any]) -> None:
        """Publish here, then tell the other servers (best effort: a failure is logged, never raised)."""
        self.local(event)
        if not self.enabled or event.get("type") != "task":
            return
        try:
            payload = json.dumps({"o": self.origin, "e": event}, default=str, separators=(",", ":"))
            if len(payload.encode()) > notify.MAX_PAYLOAD:
                payload = json.dumps({"o": self.origin, "task": (event.get("task") or {}).get("id")})
            notify.send(self.store.engine, CHANNEL, payload)
        except Exception:
            log.warning("could not relay a task event to the other servers", exc_info=True)

    def _received(self, payload: str) -> None:
        msg = json.loads(payload)
        if msg.get("o") == self.origin:
            return
        event = msg.get("e")
        if event is None and msg.get("task"):
            event = {"type": "task", "task": self.read_task(str(msg["task"]))}
        if isinstance(event, dict):
            self.local(event)

    def start(self) -> TaskEventRelay:
        if self.enabled:
            self._listener = notify.Listener(self.store.engine, CHANNEL, self._received).start()
        return self

    @property
    def listening(self) -> bool:
        return self._listener is not None and self._listener.connected.is_set()

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
