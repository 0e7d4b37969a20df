"""Connections to one remote host lent to one thread at a time.

libvirt 9.0's RPC client is not safe for two threads in calls on one connection when that connection dies
(keepalive timeout after the host stopped answering): the thread that had the I/O role returns with the
error and leaves a poll source pointing into its stack attached to the client's main context; the other
thread then waits for ever, or dispatches that source into the dead frame (SIGSEGV in
virNetClientIOEventFD). Measured on the test bed: with two request threads on one pooled connection and the
host's link taken down, one call failed with "connection closed due to keepalive timeout" and the other
never returned, even after the link came back.

So every thread that works on a remote host (an API request thread, a task worker, a CLI thread asking
hosts at once) gets a connection of its own from :class:`ThreadConnections`: the first call in a thread
opens one (or takes one a finished thread gave back), later calls in that thread get the same one, and when
the thread ends its connection goes back to the idle list for the next thread (the API's worker threads come
and go; qemu+ssh pays an SSH handshake per new connection). A connection is never closed while a thread may
still be in a call on it: a dead one is only let go (libvirt-python closes it with its last reference).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from kvmkit.hypervisor.connection import claim

IDLE_MAX = 8  # connections kept for the next thread; more are let go

Opener = Callable[[], Any]


class _Lease:
    """What a thread holds (in a threading.local). Its connection sits in ``box``, a list the finalizer
    reads when the thread ends (the finalizer must not refer to the lease, or the lease would never go)."""

    __slots__ = ("__weakref__", "box")

    def __init__(self, conn: Any) -> None:
        self.box = [conn]


def alive(conn: Any) -> bool:
    """Whether the client still counts ``conn`` as connected (answered locally; keepalive drives it)."""
    try:
        return bool(conn.isAlive())
    except Exception:
        return False


class ThreadConnections:
    """One host's connections, one per thread using it; ``open`` makes a new one (bounded, may raise)."""

    def __init__(self, open_conn: Opener) -> None:
        self._open = open_conn
        self._local = threading.local()
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def get(self) -> Any:
        """This thread's connection (a live one: a dead one is replaced)."""
        lease: _Lease | None = getattr(self._local, "lease", None)
        if lease is not None and alive(lease.box[0]):
            return lease.box[0]
        conn = self._take_idle()
        if conn is None:
            conn = self._open()
        claim(conn)
        if lease is None:
            lease = _Lease(conn)
            weakref.finalize(lease, self._give_back, lease.box)
            self._local.lease = lease
        else:
            lease.box[0] = conn  # the dead one is let go here (this thread was its only user)
        return conn

    def _take_idle(self) -> Any:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if alive(conn):
                    return conn
        return None

    def _give_back(self, box: list[Any]) -> None:
        """A thread ended (its lease was freed): keep its connection for the next thread, if it lives."""
        conn = box[0] if box else None
        box.clear()
        if conn is None or not alive(conn):
            return
        with self._lock:
            if not self._closed and len(self._idle) < IDLE_MAX:
                self._idle.append(conn)

    def drop_idle(self) -> None:
        """Let go of the idle connections (the host went down: they are dead or about to be)."""
        with self._lock:
            self._idle.clear()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._idle.clear()

    def idle(self) -> int:
        return len(self._idle)
