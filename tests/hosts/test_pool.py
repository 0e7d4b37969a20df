"""The connection pool against the test bed's daemons: a host is up once it answers, down (and failing at
once, without a connect attempt each time) when its libvirtd is killed, up again by itself once it is back
(the monitor reconnects with back-off), and a host whose address stops answering is reported down after
the connect timeout while the connect is still under way."""

from __future__ import annotations

import threading
import time

import libvirt
import pytest

from kvmkit.hosts.pool import HostDown, HostHandle, HostPool
from kvmkit.service.tasks.events import register_event_impl

pytestmark = pytest.mark.guest


class States:
    """The pool's state callbacks, waited on with an event (no sleeps)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []
        self._changed = threading.Condition()

    def __call__(self, name: str, state: str, error: str | None) -> None:
        with self._changed:
            self.seen.append((name, state, error))
            self._changed.notify_all()

    def wait(self, name: str, state: str, after: int = 0, timeout: float = 60) -> tuple[str, str, str | None]:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for item in self.seen[after:]:
                    if item[:2] == (name, state):
                        return item
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {state} for {name} in {timeout} s: {self.seen}")
                self._changed.wait(left)


def test_down_fails_at_once_and_the_monitor_brings_it_back(hosts) -> None:
    register_event_impl()  # as in the server: keepalive works
    states = States()
    pool = HostPool("qemu:///system", on_state=states)
    pool.check_interval = 0.2
    a = pool.handle("a", hosts["a"].uri)
    try:
        assert a.get().getHostname() == hosts["a"].hostname
        states.wait("a", "up")
        pool.start_monitor()
        mark = len(states.seen)
        hosts["a"].kill_libvirtd()
        _name, _state, error = states.wait("a", "down", after=mark)  # the monitor noticed, nobody asked
        assert error
        with pytest.raises(HostDown, match="host 'a' is down") as err:
            a.get()
        assert a.uri in (err.value.hint or "")
        mark = len(states.seen)
        hosts["a"].start_libvirtd()
        states.wait("a", "up", after=mark)  # reconnected by the monitor, with back-off
        assert a.get().getLibVersion() > 0
    finally:
        pool.close()


def test_the_check_is_no_second_caller_on_a_connection_a_call_hangs_on(hosts) -> None:
    """The monitor's check makes no call on the pooled connection, so it never waits behind another
    thread's call on it. Two threads in calls on one connection when it dies of keepalive crash libvirt
    9.0's client (a stale poll source dispatched into the first thread's dead stack: the server's SIGSEGV
    after a bed host's link came back); HostHandle.check docs the cause."""
    register_event_impl()  # as in the server: keepalive works
    h = HostHandle("c", hosts["c"].uri)
    conn = h.get()
    hosts["c"].link_down()
    entered, finished = threading.Event(), threading.Event()

    def hang() -> None:
        entered.set()
        try:
            conn.getLibVersion()  # no answer: hangs until the link is back or keepalive kills the connection
        except libvirt.libvirtError:
            pass
        finally:
            finished.set()

    caller = threading.Thread(target=hang, daemon=True)
    try:
        caller.start()
        assert entered.wait(30)
        result: list[bool] = []
        checked = threading.Event()

        def check() -> None:
            result.append(h.check())
            checked.set()

        threading.Thread(target=check, daemon=True).start()
        # a round trip would wait behind that call, and when keepalive kills the connection libvirt hands the
        # dispatch to it: it then waits for input that never comes (until the link is back), or crashes
        assert checked.wait(60), "the check is waiting behind the hanging call"
        assert not finished.is_set(), "the check returned only once the hanging call ended: it waited behind it"
        assert result == [True] and h.state == "up"
    finally:
        hosts["c"].link_up()
        finished.wait(120)
        h.close()


def test_threads_in_calls_when_a_host_goes_silent_each_get_an_answer(hosts) -> None:
    """In the server every thread has a connection of its own to another host (kvmkit.hosts.leases), so
    two request threads in calls on a host whose link goes silent both get keepalive's error. With one
    shared connection (as before) one of them got it and the other never returned, even after the link
    came back (libvirt 9.0's client; or it crashed the server)."""
    import queue

    register_event_impl()
    h = HostHandle("c", hosts["c"].uri, per_thread=True)
    conns: list[libvirt.virConnect] = []
    ready, go = threading.Barrier(3), threading.Barrier(3)
    answers: queue.Queue[str] = queue.Queue()

    def call() -> None:
        conn = h.get()
        conn.getLibVersion()
        conns.append(conn)
        ready.wait(30)
        go.wait(30)
        try:
            conn.getLibVersion()
            answers.put("answered")
        except libvirt.libvirtError as err:
            answers.put(err.get_error_message())

    try:
        for _ in range(2):
            threading.Thread(target=call, daemon=True).start()
        ready.wait(30)
        assert conns[0] is not conns[1] and h.peek() not in conns
        hosts["c"].link_down()
        go.wait(30)
        got = [answers.get(timeout=120) for _ in range(2)]  # failure guard: keepalive ends them in ~20 s
        assert all("keepalive" in a for a in got), got
        hosts["c"].link_up()
        assert h.get().getLibVersion() > 0  # this thread (and the pool) connect again
    finally:
        hosts["c"].link_up()
        h.close()


def test_a_thread_keeps_its_connection_and_the_next_thread_reuses_it(hosts) -> None:
    from kvmkit.hypervisor.connection import worker_connection

    h = HostHandle("b", hosts["b"].uri, per_thread=True)
    try:
        mine = h.get()
        assert h.get() is mine and mine is not h.peek()
        assert worker_connection(mine) is mine  # a task body on it opens no third one
        seen: list[libvirt.virConnect] = []
        first = threading.Thread(target=lambda: seen.append(h.get()))
        first.start()
        first.join()
        assert seen[0] is not mine and h._threads is not None
        assert h._threads.idle() == 1  # the thread ended: its connection waits for the next one
        second = threading.Thread(target=lambda: seen.append(h.get()))
        second.start()
        second.join()
        assert seen[1] is seen[0] and seen[1].getLibVersion() > 0
        assert HostHandle("l", "qemu:///system", local=True, per_thread=True)._threads is None  # local: pooled
    finally:
        h.close()


def test_an_address_that_stops_answering_is_down_after_the_timeout(hosts) -> None:
    states = States()
    hosts["b"].link_down()
    h = HostHandle("b", hosts["b"].uri, connect_timeout=1.0, on_state=states)
    try:
        with pytest.raises(HostDown, match="no answer from"):
            h.get()
        assert h._attempt is not None  # the connect is still waiting for TCP: the caller was not held up by it
        assert states.wait("b", "down")[2].startswith("no answer")
        with pytest.raises(HostDown):
            h.get()  # the same attempt is still under way: waited on for the timeout again, not a new one
    finally:
        hosts["b"].link_up()
        h.close()


def test_the_pool_keeps_one_handle_per_host_and_forgets_removed_ones(hosts) -> None:
    pool = HostPool("qemu:///system")
    try:
        h1 = pool.handle("a", hosts["a"].uri)
        assert pool.handle("a", hosts["a"].uri) is h1
        h2 = pool.handle("a", hosts["b"].uri)  # the inventory gave it another URI
        assert h2 is not h1 and h2.get().getHostname() == hosts["b"].hostname
        pool.retain({"local"})
        assert pool.get("a") is None and pool.get("local") is pool.local
    finally:
        pool.close()
