"""Several task runners ("servers") on one real database: a target is held by exactly one task across all of
them, a stopped server's tasks are taken over exactly once however many servers look at the same moment,
a server taken for stopped cannot journal or finish its task any more (and goes on under a new id), a
clean stop fails only the tasks it never started, and on PostgreSQL task events cross to the other servers.
Each "server" here is a TaskRunner with its own Store (own engine and connections), as in its own process;
tests/api/test_two_servers.py does the same with real ``kvmkit serve`` processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from kvmkit.service.tasks.relay import TaskEventRelay
from kvmkit.service.tasks.runner import RECOVERY, Busy, TaskContext, TaskRunner
from kvmkit.service.tasks.servers import Membership
from kvmkit.store.db import Store
from kvmkit.store.models import Server, Task, TaskLock, TaskStep

pytestmark = pytest.mark.fast
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_cluster").new_database())
    return f"sqlite:///{tmp_path}/kvmkit.db"


@pytest.fixture()
def pg_url(pg_cluster: Any) -> str:
    return str(pg_cluster.new_database())


class Servers:
    """A factory of runners on one database, each with its own Store, shut down afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[tuple[TaskRunner, Store]] = []
        self.events: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, *, timeout: float = 30.0, workers: int = 8) -> TaskRunner:
        store = Store(self.url)
        events: list[dict[str, Any]] = []
        r = TaskRunner(store, workers=workers, publish=events.append,
                       membership=Membership(store, interval=0.2, timeout=timeout))
        self.events[r.server_id] = events
        self.made.append((r, store))
        return r

    def close(self) -> None:
        for r, store in self.made:
            r.shutdown()
            store.engine.dispose()


@pytest.fixture()
def servers(db_url: str) -> Iterator[Servers]:
    made = Servers(db_url)
    yield made
    made.close()


@pytest.fixture()
def pg_servers(pg_url: str) -> Iterator[Servers]:
    made = Servers(pg_url)
    yield made
    made.close()


@pytest.fixture()
def handler() -> Iterator[list[str]]:
    """A clean-up handler for kind test.takeover that records each task it cleans up after."""
    calls: list[str] = []
    lock = threading.Lock()

    def clean(_conn: Any, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
        with lock:
            calls.append(task["id"])
        return [f"undid {steps[-1]['name'] if steps else 'nothing'}"]

    RECOVERY["test.takeover"] = clean
    yield calls
    del RECOVERY["test.takeover"]


def wait_state(r: TaskRunner, task_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (t := r.get(task_id, steps=True))["state"] in ("queued", "running"):
        assert time.monotonic() < deadline, t
        time.sleep(0.02)
    return t


def wait_until(pred: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return got


def test_one_target_one_task_across_servers(servers: Servers) -> None:
    a, b = servers(), servers()
    gate = threading.Event()

    def body(ctx: TaskContext) -> str:
        ctx.step("hold", 10)
        gate.wait(60)
        return "done"

    barrier = threading.Barrier(8)
    won: list[dict[str, Any]] = []
    lost: list[Busy] = []
    lock = threading.Lock()

    def submit(r: TaskRunner) -> None:
        barrier.wait()
        try:
            task = r.submit("test.race", "vm:race", body)
        except Busy as err:
            with lock:
                lost.append(err)
            return
        with lock:
            won.append(task)

    threads = [threading.Thread(target=submit, args=(r,)) for r in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(lost) == 7, (won, lost)
    winner = won[0]
    assert all(err.task_id == winner["id"] and err.server == winner["server"] for err in lost)
    assert all(f"busy with task {winner['id']} (test.race) on server {winner['server']}" in err.message
               for err in lost)
    other = b if winner["server"] == a.server_id else a
    with pytest.raises(Busy) as held, other.hold("vm:race", "test.change"):
        pass
    assert held.value.task_id == winner["id"]
    gate.set()
    assert wait_state(other, winner["id"])["state"] == "succeeded"
    assert other.holder("vm:race") is None  # released in the transaction that recorded the end
    again = other.submit("test.race", "vm:race", lambda ctx: ctx.step("again"))
    assert wait_state(other, again["id"])["state"] == "succeeded"
    assert again["server"] == other.server_id


def test_a_hold_inside_a_task_is_the_tasks(servers: Servers) -> None:
    a, b = servers(), servers()
    inside, gate = threading.Event(), threading.Event()

    def body(ctx: TaskContext) -> None:
        ctx.step("copy", 10)
        with a.hold("vm:new", "test.copy"):
            inside.set()
            gate.wait(60)

    task = a.submit("test.copy", "vm:src", body)
    wait_until(inside.is_set, "the task's inner hold")
    held = b.holder("vm:new")
    assert held is not None and (held.holder, held.server) == (task["id"], a.server_id)
    gate.set()
    assert wait_state(b, task["id"])["state"] == "succeeded"
    assert b.holder("vm:new") is None and b.holder("vm:src") is None


def _gone_server(store: Store, sid: str = "dead-server-1") -> str:
    """A server row on another machine whose last heartbeat was an hour ago, with a running task (journalled
    up to step 'make', holding vm:t), a queued one (holding vm:q) and a request's hold (vm:s)."""
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    with store.session() as s:
        s.add(Server(id=sid, host="elsewhere", pid=4242, state="up", started_at=long_ago, heartbeat_at=long_ago))
        for tid, state, target in (("t-run", "running", "vm:t"), ("t-queued", "queued", "vm:q")):
            s.add(Task(id=tid, kind="test.takeover", target=target, state=state, owner=sid, message=state))
            s.add(TaskLock(target=target, holder=tid, kind="test.takeover", server=sid))
        s.add(TaskLock(target="vm:s", holder="sync-1", kind="vm.set", server=sid))
    with store.session() as s:
        s.add(TaskStep(task_id="t-run", seq=1, name="make"))
    return sid


def test_a_stopped_server_is_taken_over_exactly_once(servers: Servers, handler: list[str]) -> None:
    runners = [servers() for _ in range(3)]
    sid = _gone_server(runners[0].store)
    barrier = threading.Barrier(len(runners))
    out: dict[str, list[dict[str, Any]]] = {}

    def recover(r: TaskRunner) -> None:
        barrier.wait()
        out[r.server_id] = r.recover(conn=object())

    threads = [threading.Thread(target=recover, args=(r,)) for r in runners]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(handler) == ["t-queued", "t-run"]  # each cleaned up once, by one server
    assert sorted(d["id"] for done in out.values() for d in done) == ["t-queued", "t-run"]
    r0 = runners[0]
    with r0.store.session() as s:
        row = s.get(Server, sid)
        assert row is not None and row.state == "dead" and row.reaped_by in {r.server_id for r in runners}
        assert list(s.scalars(select(TaskLock))) == []  # the tasks' holds and the request's hold are gone
    run = r0.get("t-run", steps=True)
    assert run["state"] == "failed" and run["server"] in {r.server_id for r in runners}
    assert run["error"].startswith(f"interrupted: the server stopped while the task was at step 'make' (server {sid} "
                                   "on elsewhere, pid 4242, stopped while the task ran: "), run["error"]
    assert "last heartbeat" in run["error"] and run["error"].endswith("; clean-up: undid make")
    assert [s["name"] for s in run["steps"]] == ["make"]
    assert r0.get("t-queued")["error"].startswith("interrupted: the server stopped while the task was at step "
                                                  "'before its first step'")
    ends = [e["task"]["id"] for events in servers.events.values() for e in events if e["task"]["state"] == "failed"]
    assert sorted(ends) == ["t-queued", "t-run"]  # one end each, published by the server that recorded it
    late = servers()  # a server started afterwards finds nothing more to do
    assert late.recover(conn=object()) == [] and sorted(handler) == ["t-queued", "t-run"]


def test_a_server_taken_for_stopped_cannot_go_on(servers: Servers, handler: list[str]) -> None:
    a, b = servers(), servers()
    stepped, gate = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def body(ctx: TaskContext) -> None:
        ctx.step("make", 10)
        stepped.set()
        gate.wait(60)
        try:
            ctx.step("more", 50)
        except BaseException as err:
            outcome.append(err)
            raise

    task = a.submit("test.takeover", "vm:z", body)
    wait_until(stepped.is_set, "the first step")
    old = a.server_id
    with a.store.session() as s:  # A stops beating (paused, cut off): its heartbeat is old
        s.execute(update(Server).where(Server.id == old).values(heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    [done] = b.recover(conn=object())
    assert done["id"] == task["id"] and handler == [task["id"]]
    gate.set()
    wait_until(lambda: outcome, "A's next step")
    assert type(outcome[0]).__name__ == "TakenOver" and b.server_id in str(outcome[0])
    a._pool.shutdown(wait=True)  # A's worker has returned without recording anything
    t = b.get(task["id"], steps=True)
    assert t["state"] == "failed" and t["server"] == b.server_id and [s["name"] for s in t["steps"]] == ["make"]
    assert f"(server {old} on " in t["error"] and "no heartbeat for" in t["error"]
    assert not a.members.beat()  # A learns it was taken for stopped, and goes on under a new id
    a.rejoin()
    assert a.server_id != old and a.members.beat()
    with a.store.session() as s:
        assert s.get(Server, old).state == "dead" and s.get(Server, a.server_id).state == "up"


def test_a_clean_stop_fails_only_what_it_never_started(servers: Servers) -> None:
    a = servers(workers=1)
    started, gate = threading.Event(), threading.Event()

    def slow(ctx: TaskContext) -> str:
        ctx.step("work", 10)
        started.set()
        gate.wait(60)
        return "finished"

    first = a.submit("test.stop", "vm:1", slow)
    second = a.submit("test.stop", "vm:2", lambda ctx: ctx.step("never"))
    wait_until(started.is_set, "the first task")
    stopper = threading.Thread(target=a.shutdown)
    stopper.start()
    gate.set()
    stopper.join(60)
    assert a.get(first["id"])["state"] == "succeeded"  # a running task finishes before the server stops
    t2 = a.get(second["id"], steps=True)
    assert t2["state"] == "failed" and t2["steps"] == [] and "shut down before it started the task" in t2["error"]
    assert a.holder("vm:2") is None
    with a.store.session() as s:
        assert s.get(Server, a.server_id).state == "stopped"


def test_a_previous_process_on_this_machine_is_recovered_at_once(db_url: str, handler: list[str]) -> None:
    """The server before this one (same machine) was killed: its row still looks fresh, but its process is
    gone, so the next server takes its task over at start-up without waiting for the timeout."""
    code = (
        "import os, sys\n"
        "from kvmkit.store.db import Store\n"
        "from kvmkit.store.models import Task, TaskLock, TaskStep\n"
        "from kvmkit.service.tasks.servers import Membership\n"
        "store = Store(sys.argv[1]); m = Membership(store); m.register()\n"
        "with store.session() as s:\n"
        "    s.add(Task(id='t-killed', kind='test.takeover', target='vm:k', state='running', owner=m.id))\n"
        "    s.add(TaskLock(target='vm:k', holder='t-killed', kind='test.takeover', server=m.id))\n"
        "with store.session() as s:\n"
        "    s.add(TaskStep(task_id='t-killed', seq=1, name='define'))\n"
        "print(m.id, flush=True); os._exit(0)\n"
    )
    dead = subprocess.run([sys.executable, "-c", code, db_url], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, check=True).stdout.strip()
    store = Store(db_url)
    try:
        r = TaskRunner(store, membership=Membership(store, interval=5, timeout=3600))
        [done] = r.recover(conn=object())
        assert done["id"] == "t-killed" and handler == ["t-killed"]
        assert f"(server {dead} on " in done["error"] and "its process has ended" in done["error"]
        assert r.holder("vm:k") is None
        r.shutdown()
    finally:
        store.engine.dispose()


def test_task_events_cross_to_the_other_servers(pg_url: str) -> None:
    stores = [Store(pg_url), Store(pg_url)]
    got: list[list[dict[str, Any]]] = [[], []]
    relays = [TaskEventRelay(st, got[i].append, lambda tid: {"id": tid, "read": True}).start()
              for i, st in enumerate(stores)]
    try:
        wait_until(lambda: all(r.listening for r in relays), "both listeners")
        small = {"type": "task", "task": {"id": "t-1", "state": "succeeded"}}
        relays[0].publish(small)
        wait_until(lambda: got[1], "the event on the other server")
        assert got[1] == [small] and got[0] == [small]  # the sender publishes it once, locally
        big = {"type": "task", "task": {"id": "t-2", "state": "succeeded", "result": "x" * 10000}}
        relays[1].publish(big)
        wait_until(lambda: len(got[0]) == 2, "the big event")
        assert got[0][1] == {"type": "task", "task": {"id": "t-2", "read": True}}  # read back by id
        relays[0].publish({"type": "vm", "vm": "x"})  # libvirt events are each server's own: not relayed
        relays[0].publish(small)
        wait_until(lambda: len(got[1]) == 3, "the third event")
        assert [json.dumps(e, sort_keys=True) for e in got[1]][1:] == [json.dumps(e, sort_keys=True)
                                                                       for e in (big, small)]
    finally:
        for r in relays:
            r.stop()
        for st in stores:
            st.engine.dispose()


def test_a_clean_up_waits_for_libvirt(servers: Servers, handler: list[str]) -> None:
    """Taken over while libvirt is unreachable: the task stays running (saying why) and keeps its holds; the
    watchdog cleans up once a connection can be had."""
    r = servers()
    _gone_server(r.store)
    assert r.recover(conn=None) == []  # nothing could be cleaned up without libvirt
    t = r.get("t-run")
    assert t["state"] == "running" and t["server"] == r.server_id and "waiting for libvirt" in t["message"]
    assert r.holder("vm:t") is not None and handler == []
    assert r.get("t-queued")["state"] == "queued" and "waiting for libvirt" in r.get("t-queued")["message"]
    reachable = threading.Event()

    def conn_get() -> object:
        if not reachable.is_set():
            raise RuntimeError("libvirtd is not running")
        return object()

    r.start_watchdog(conn_get)
    reachable.set()
    assert wait_state(r, "t-run")["state"] == "failed" and wait_state(r, "t-queued")["state"] == "failed"
    assert sorted(handler) == ["t-queued", "t-run"] and r.holder("vm:t") is None


def test_a_clean_up_on_another_host_waits_for_that_host_and_ends_when_it_left(servers: Servers,
                                                                             handler: list[str]) -> None:
    """A task that ran on host b is cleaned up there: while b does not answer it waits, naming b; once b
    is removed from the inventory it is failed at once, saying nothing was cleaned up there (before, it
    waited for ever)."""
    from kvmkit.errors import NotFound
    from kvmkit.hosts.pool import HostDown

    r = servers()
    _gone_server(r.store)
    with r.store.session() as s:
        s.execute(update(Task).values(intent={"host": "b"}))
    removed = threading.Event()

    def host_conn(name: str) -> object:
        assert name == "b"
        if removed.is_set():
            raise NotFound("host 'b' is not in the inventory")
        raise HostDown("host 'b' is down: no answer")

    r.host_conn = host_conn
    assert r.recover(conn=object()) == []  # the local connection is no use for b's tasks
    assert "waiting for host 'b'" in r.get("t-run")["message"] and handler == []
    removed.set()
    r.start_watchdog(lambda: object())
    t = wait_state(r, "t-run")
    assert t["state"] == "failed" and "not cleaned up: host 'b' is not in the inventory" in t["error"]
    assert wait_state(r, "t-queued")["state"] == "failed" and handler == [] and r.holder("vm:t") is None
