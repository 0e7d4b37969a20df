"""A pool of libvirt connections, one per host, reconnecting with back-off and knowing which hosts are up.

A :class:`HostHandle` is what the API and the service layer hold for "the host to work on": ``get()`` gives
a live connection for the calling thread (opened again after libvirtd went away; in the server, for another
host than the local one, a connection of the thread's own: kvmkit.hosts.leases says why), ``shared()`` and
``peek()`` the pooled one (waiting for it, or not).

- Every host, the local one too, is asked with a bound: opening its connection waits at most
  ``connect_timeout`` seconds (a host whose address does not answer makes libvirt wait ~2 min for TCP; a
  stuck local libvirtd for ever), and after a failure the host is *down* and further calls fail at once
  (:class:`HostDown`; for the local host a HostError naming libvirtd; HTTP 503 with Retry-After) until its
  next retry (back-off 1 s doubling to 30 s; the local host 0.5 s doubling to 2 s, so that a restarted
  libvirtd is used again at once). A late connection that succeeds after its caller gave up is kept for
  the next call.
- With :meth:`HostPool.start_monitor` (the server), one thread per other host checks it every few
  seconds (whether its connection is alive: keepalive finds a dead one; no call of its own on it, see
  :meth:`HostHandle.check`) and reconnects when due, so its state changes without anybody asking; each change
  goes to ``on_state(name, state, error)`` (the server puts it on the event stream).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import libvirt

from kvmkit.errors import HostError
from kvmkit.hosts.leases import ThreadConnections, alive

log = logging.getLogger("kvmkit.hosts")

CONNECT_TIMEOUT_S = 5.0
BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
CHECK_INTERVAL_S = 5.0
LOCAL_CONNECT_TIMEOUT_S = 10.0
LOCAL_BACKOFF = (0.5, 2.0)
LOCAL_HINT = ("is libvirtd running? start it with `libvirtd -d` (or `systemctl start libvirtd`); the server reconnects "
              "by itself: retry in a few seconds")
StateCallback = Callable[[str, str, "str | None"], None]


class HostDown(HostError):
    """The host does not answer (its libvirtd is stopped, or its address unreachable)."""

    code = "host_down"
    http_status = 503


def _close(conn: Any) -> None:
    """Let go of a connection. It is not closed here: another thread (a VM list rebuild, the monitor's check,
    a task) may be in a call on it, and virConnectClose under a running call frees what that call uses (the
    server crashed so). libvirt-python closes it when the last reference goes (virConnect.__del__)."""
    del conn


class HostHandle:
    """One host's pooled connection and state (``unknown`` until first asked, then ``up`` or ``down``)."""

    def __init__(self, name: str, uri: str, *, local: bool = False, connect_timeout: float = CONNECT_TIMEOUT_S,
                 on_state: StateCallback | None = None, per_thread: bool = False) -> None:
        self.name = name
        self.uri = uri
        self.local = local
        self.connect_timeout = connect_timeout
        self.on_state = on_state
        self.state = "unknown"
        self.error: str | None = None
        self.since = time.time()
        self._conn: Any = None
        self._lock = threading.Lock()
        self._attempt: threading.Event | None = None  # set when the connect in flight ends
        self._backoff_first, self._backoff_max = LOCAL_BACKOFF if local else (BACKOFF_FIRST_S, BACKOFF_MAX_S)
        if local and connect_timeout == CONNECT_TIMEOUT_S:
            self.connect_timeout = LOCAL_CONNECT_TIMEOUT_S
        self._backoff = self._backoff_first
        self._retry_at = 0.0
        self._closed = False
        # per-thread connections for another host, where many threads call at once (the server; not the local
        # host, and not test:///, which is one in-process world)
        own = per_thread and not local and not uri.startswith("test:")
        self._threads = ThreadConnections(self._open_own) if own else None

    # the interface the API and the service layer use (as api.state.Hypervisor had) -------------------
    def get(self) -> Any:
        """The connection for the calling thread; HostDown when another host does not answer (in time).

        The local host's is the pooled one. Another host's is this thread's own (:mod:`kvmkit.hosts.leases`:
        libvirt 9.0's client hangs or crashes when a connection dies with two threads in calls on it), given
        only while the pooled one is up, so a host that is down fails at once as before."""
        shared = self.shared()
        if self._threads is None:
            return shared
        return self._threads.get()

    def shared(self) -> Any:
        """The pooled connection (the one the VM list registers its events on and the monitor watches)."""
        conn = self._conn
        if conn is not None and alive(conn):
            return conn
        return self._get_remote(self.connect_timeout)

    def peek(self) -> Any:
        """The open connection without connecting or waiting (None when there is none or it is dead)."""
        conn = self._conn
        return conn if conn is not None and alive(conn) else None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()
        if self._threads is not None:
            self._threads.close()

    # state -----------------------------------------------------------------------------------------
    def _set_state(self, state: str, error: str | None) -> None:
        changed = state != self.state
        self.state, self.error = state, error
        if changed:
            self.since = time.time()
            if state == "down":
                log.warning("host %s is down: %s", self.name, error)
            elif state == "up":
                log.info("host %s is up", self.name)
            if self.on_state is not None:
                try:
                    self.on_state(self.name, state, error)
                except Exception:
                    log.debug("host state callback failed", exc_info=True)

    def _drop(self) -> None:
        if self._conn is not None:
            _close(self._conn)
            self._conn = None

    def mark_down(self, error: str) -> None:
        """A call on the connection failed for good: drop it; the next get() (or the monitor) reconnects."""
        with self._lock:
            self._drop()
            self._failed(error)
        if self._threads is not None:
            self._threads.drop_idle()

    def _failed(self, error: str) -> None:
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._backoff_max)
        self._set_state("down", error)

    def _connected(self, conn: Any) -> None:
        if self._closed:
            _close(conn)
            return
        old, self._conn = self._conn, conn
        if old is not None and old is not conn:
            _close(old)
        self._backoff = self._backoff_first
        self._retry_at = 0.0
        self._set_state("up", None)

    # connecting ------------------------------------------------------------------------------------
    def _get_remote(self, timeout: float) -> Any:
        with self._lock:
            if self._conn is not None and alive(self._conn):
                return self._conn
            attempt = self._attempt
            if attempt is None:
                if self.state == "down" and time.monotonic() < self._retry_at:
                    raise self._down()
                self._drop()
                attempt = self._start_attempt()
        attempt.wait(timeout)
        conn = self._conn
        if conn is not None and alive(conn):
            return conn
        if not attempt.is_set():  # still connecting: the host is slow or its address does not answer
            with self._lock:
                self._set_state("down", f"no answer from {self.uri} in {timeout:g} s")
        raise self._down()

    def _open_own(self) -> Any:
        """A new connection for one thread, waited for at most ``connect_timeout`` seconds (the pooled one
        is up, so this one normally opens at once; a host that stopped answering meanwhile is down)."""
        got: list[Any] = []
        if not self._open_in_thread(got.append).wait(self.connect_timeout):
            self.mark_down(f"no answer from {self.uri} in {self.connect_timeout:g} s")
            raise self._down()
        if isinstance(got[0], Exception):
            self.mark_down(_why(got[0]))
            raise self._down()
        return got[0]

    def _start_attempt(self) -> threading.Event:
        """Open the connection in a thread (the caller holds the lock); its end sets the returned event."""

        def ended(result: Any) -> None:
            with self._lock:
                self._attempt = None
                if isinstance(result, Exception):
                    self._failed(_why(result))
                else:
                    self._connected(result)

        self._attempt = self._open_in_thread(ended)
        return self._attempt

    def _open_in_thread(self, ended: Callable[[Any], None]) -> threading.Event:
        """Connect (with keepalive) in a thread of its own, which hands the connection or the exception to
        ``ended``, then sets the returned event: a caller waits on it with a bound, and a late end is still
        handled by ``ended``."""
        done = threading.Event()

        def run() -> None:
            from kvmkit.hypervisor.connection import connect

            try:
                conn = connect(self.uri)
                _keepalive(conn)
            except Exception as err:  # HostError; anything else is libvirt raising something unexpected
                result: Any = err
            else:
                result = conn
            try:
                ended(result)
            finally:
                done.set()

        threading.Thread(target=run, name=f"kvmkit-connect-{self.name}", daemon=True).start()
        return done

    def _down(self) -> HostError:
        import math

        wait = max(0.0, self._retry_at - time.monotonic())
        retry = f"; kvmkit tries again in {wait:.0f} s" if wait >= 1 else ""
        if self.local:
            err: HostError = HostError(f"libvirtd at {self.uri} is not available: {self.error or 'no answer'}{retry}",
                                       hint=LOCAL_HINT)
        else:
            err = HostDown(f"host '{self.name}' is down: {self.error or 'not reachable'}{retry}",
                           hint=f"check that libvirtd runs on that host and answers at {self.uri}; "
                                "see `kvmkit host list`")
        err.retry_after = max(1, math.ceil(wait))  # type: ignore[attr-defined]  # the API sends Retry-After
        return err

    def check(self) -> bool:
        """Is the host up? Updates the state; connects when due. True when it is up.

        No call is made on the pooled connection: ``isAlive()`` is answered by the client alone, and the
        connection's keepalive (:func:`_keepalive`, sent by the server's event loop) turns it false when
        libvirtd goes away (EOF) or the host stops answering (silent link). A round trip here would make
        the monitor a second caller on a connection another thread's call may be hanging on, and libvirt
        9.0's RPC client crashes when a connection dies (keepalive timeout) with two threads in calls on
        it: the first thread's poll source, which points at its stack, is left attached to the client's
        private main context (virNetClientIOEventLoop only unrefs it when another thread's call woke it
        up), the first thread returns with the error and passes the dispatch to the second, whose poll
        then dispatches the stale source into the dead stack frame (SIGSEGV in virNetClientIOEventFD)."""
        conn = self._conn
        if conn is not None:
            if alive(conn):
                if self.state != "up":
                    with self._lock:
                        self._set_state("up", None)
                return True
            self.mark_down(f"the connection to {self.uri} was lost (libvirtd stopped, or the host stopped "
                           "answering keepalive)")
            return False
        if time.monotonic() < self._retry_at:
            return False
        try:
            self._get_remote(self.connect_timeout)
            return True
        except HostError:
            return False

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "error": self.error, "since": self.since}


def _why(err: BaseException) -> str:
    return err.message if isinstance(err, HostError) else str(err)


def _keepalive(conn: Any) -> None:
    """Ask libvirt to notice a dead peer (works when an event loop is registered, as in the server)."""
    try:
        conn.setKeepAlive(5, 3)
    except libvirt.libvirtError:
        pass  # no event loop in this process (the CLI): calls fail when TCP gives up


class HostPool:
    """The handles of every host by name; the local one always exists."""

    def __init__(self, local_uri: str, *, connect_timeout: float = CONNECT_TIMEOUT_S,
                 on_state: StateCallback | None = None, per_thread: bool = False) -> None:
        """``per_thread``: other hosts' handles give each thread a connection of its own (the server, whose
        request threads and task workers call at once; a CLI process asks each host from one thread)."""
        from kvmkit.hosts.record import LOCAL

        self.connect_timeout = connect_timeout
        self.on_state = on_state
        self.per_thread = per_thread
        self.local = HostHandle(LOCAL, local_uri, local=True, on_state=on_state)
        self._handles: dict[str, HostHandle] = {LOCAL: self.local}
        self._lock = threading.Lock()
        self._monitors: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._monitoring = False
        self.check_interval = CHECK_INTERVAL_S

    def handle(self, name: str, uri: str) -> HostHandle:
        """The handle of host ``name`` at ``uri`` (a new one when the URI changed)."""
        with self._lock:
            h = self._handles.get(name)
            if h is not None and (h.local or h.uri == uri):
                return h
            if h is not None:
                h.close()
            h = HostHandle(name, uri, connect_timeout=self.connect_timeout, on_state=self.on_state,
                           per_thread=self.per_thread)
            self._handles[name] = h
            if self._monitoring:
                self._start_monitor(h)
            return h

    def get(self, name: str) -> HostHandle | None:
        return self._handles.get(name)

    def handles(self) -> list[HostHandle]:
        return list(self._handles.values())

    def retain(self, names: set[str]) -> None:
        """Close and forget the handles of hosts no longer in the inventory."""
        with self._lock:
            for name in [n for n, h in self._handles.items() if not h.local and n not in names]:
                self._handles.pop(name).close()

    # monitoring (the server) -----------------------------------------------------------------------
    def start_monitor(self, interval: float | None = None) -> None:
        if interval is not None:
            self.check_interval = interval
        with self._lock:
            self._monitoring = True
            for h in self._handles.values():
                if not h.local:
                    self._start_monitor(h)

    def _start_monitor(self, h: HostHandle) -> None:
        def loop() -> None:
            while not self._stop.is_set() and self._handles.get(h.name) is h:
                try:
                    h.check()
                except Exception:
                    log.debug("checking host %s failed", h.name, exc_info=True)
                wait = self.check_interval
                if h.state == "down":
                    wait = min(wait, max(0.2, h._retry_at - time.monotonic()))
                self._stop.wait(wait)

        t = threading.Thread(target=loop, name=f"kvmkit-host-{h.name}", daemon=True)
        self._monitors[h.name] = t
        t.start()

    def close(self) -> None:
        self._stop.set()
        for h in self.handles():
            h.close()
