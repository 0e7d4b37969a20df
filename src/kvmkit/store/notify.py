"""PostgreSQL LISTEN/NOTIFY: how servers on one database tell each other that something changed.

``send`` queues a notification (delivered when its transaction commits, to every connection listening on
the channel, in commit order); ``Listener`` keeps one dedicated connection listening and hands each payload
to a callback, reconnecting with back-off when the connection drops (notifications sent meanwhile are
lost: a receiver that must not miss a change reads the table again after ``on_connect``). SQLite has no
such thing: there ``supported`` is False (one server per SQLite database, nothing to tell).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, text

log = logging.getLogger("kvmkit.store")
MAX_PAYLOAD = 7900  # PostgreSQL refuses payloads of 8000 bytes and more


def supported(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def send(engine: Engine, channel: str, payload: str) -> None:
    """Notify ``channel`` now (its own short transaction)."""
    with engine.begin() as c:
        c.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})


class Listener:
    """A thread that LISTENs on ``channel`` over its own connection and calls ``on_payload(text)``."""

    def __init__(self, engine: Engine, channel: str, on_payload: Callable[[str], None], *,
                 on_connect: Callable[[], None] | None = None, max_backoff: float = 5.0) -> None:
        self.engine, self.channel = engine, channel
        self.on_payload, self.on_connect = on_payload, on_connect
        self.max_backoff = max_backoff
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Listener:
        self._thread = threading.Thread(target=self._run, name=f"kvmkit-listen-{self.channel}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _connect(self) -> Any:
        import psycopg

        cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
        conn = psycopg.connect(*cargs, **cparams, autocommit=True)
        conn.execute(f'LISTEN "{self.channel}"')
        return conn

    def _run(self) -> None:
        backoff = 0.2
        while not self._stop.is_set():
            conn = None
            try:
                conn = self._connect()
                self.connected.set()
                backoff = 0.2
                if self.on_connect is not None:
                    self.on_connect()
                while not self._stop.is_set():
                    for note in conn.notifies(timeout=1.0):
                        try:
                            self.on_payload(note.payload)
                        except Exception:
                            log.exception("handling a notification on %s failed", self.channel)
            except Exception as err:
                if self._stop.is_set():
                    break
                log.warning("listening on %s failed (%s); again in %.1f s", self.channel, err, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
            finally:
                self.connected.clear()
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
