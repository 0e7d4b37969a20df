"""Two real ``kvmkit serve`` processes on one PostgreSQL database (the tests' private cluster), on
qemu:///system with micro-guests:

- 40 power actions and snapshots on four guests, half submitted to each server and every third one to both
  at once (a Barrier): no task runs twice (one journal per task, one audited outcome per task), one task per
  VM across the servers (the loser of a race gets 409 naming the winner's task and server), and both
  servers' event streams show the end of every task, whichever server ran it;
- a server SIGKILLed in the middle of a VM create: the other one notices (no heartbeat within the timeout),
  fails the task naming the dead server and its last heartbeat, and removes the half-made domain and
  volume; the killed server started again does nothing more;
- a server paused (SIGSTOP) longer than the timeout: its task is taken over the same way, and when it
  resumes it does not take the step it was paused before; it goes on serving under a new server id.

Waits are on task states, events and log lines, never on durations.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import libvirt
import pytest

from kvmkit.images import qemu_img
from tests.api.server import EventReader, Server

pytestmark = pytest.mark.guest
FINAL = ("succeeded", "failed", "cancelled")
HEARTBEAT = {"KVMKIT_HEARTBEAT_S": "0.5"}


class Pair:
    """Servers on one database with an admin token, stopped and removed afterwards."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.servers: list[Server] = []
        self.token = ""

    def start(self, env: dict[str, str]) -> Server:
        srv = Server(self.db, env=env)
        if not self.token:
            srv.cli("user", "add", "admin", "--role", "admin")
            self.token = srv.token("admin")
        srv.start()
        self.servers.append(srv)
        return srv

    def client(self, srv: Server) -> httpx.Client:
        return srv.client(self.token)

    def server_id(self, srv: Server) -> str:
        with self.client(srv) as c:
            return str(next(row["id"] for row in c.get("/api/v1/servers").json() if row["this"]))

    def cleanup(self) -> None:
        for srv in self.servers:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.proc.send_signal(signal.SIGCONT)
            srv.cleanup()


@pytest.fixture()
def pair(pg_cluster: Any) -> Iterator[Pair]:
    p = Pair(pg_cluster.new_database())
    yield p
    p.cleanup()


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := pred()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout} s")
        time.sleep(0.1)
    return got


def task_end(reader: EventReader, task_id: str) -> dict[str, Any] | None:
    for ev in list(reader.events):
        task = ev.get("task") or {}
        if ev.get("kind") == "task" and task.get("id") == task_id and task.get("state") in FINAL:
            return dict(task)
    return None


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def wait_task(c: httpx.Client, task_id: str, timeout: float = 300) -> dict[str, Any]:
    return dict(wait_for(lambda: (t := c.get(f"/api/v1/tasks/{task_id}").json())["state"] in FINAL and t,
                         f"end of task {task_id}", timeout))


def _guest_with_disk(micro_guest: Any, workdir: Any, suffix: str) -> str:
    disk = workdir / f"{suffix}.qcow2"
    qemu_img.create(disk, "qcow2", 64 * 1024**2)
    disk.chmod(0o666)
    return str(micro_guest(suffix, start=True, disks=[{"path": str(disk), "format": "qcow2"}]).name)


OPS = ("suspend", "resume", "snap:s1", "suspend", "resume", "snap:s2", "unsnap:s1", "suspend", "resume", "unsnap:s2")
FIRST_STEP = {"vm.suspend": "suspend", "vm.resume": "resume", "vm.snapshot.create": "snapshot",
              "vm.snapshot.delete": "delete-snapshot"}


def _op(c: httpx.Client, vm: str, op: str) -> httpx.Response:
    if op.startswith("snap:"):
        return c.post(f"/api/v1/vms/{vm}/snapshots", json={"name": op[5:]})
    if op.startswith("unsnap:"):
        return c.delete(f"/api/v1/vms/{vm}/snapshots/{op[7:]}")
    return c.post(f"/api/v1/vms/{vm}/actions/{op}")


def _race(clients: dict[str, httpx.Client], vm: str, op: str) -> dict[str, httpx.Response]:
    """The same operation on the same VM through both servers, released together by a Barrier."""
    barrier = threading.Barrier(len(clients))
    answers: dict[str, httpx.Response] = {}

    def send(name: str) -> None:
        barrier.wait()
        answers[name] = _op(clients[name], vm, op)

    threads = [threading.Thread(target=send, args=(n,)) for n in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return answers


def test_forty_tasks_run_once_each_one_per_vm_across_servers(pair: Pair, micro_guest: Any, workdir: Any) -> None:
    # every step pauses 2 s, so a task outlives a request racing it from the other server
    env = {**HEARTBEAT, "KVMKIT_SERVER_TIMEOUT_S": "10", "KVMKIT_TASK_STEP_DELAY": "2"}
    a, b = pair.start(env), pair.start(env)
    ids = {pair.server_id(a): "a", pair.server_id(b): "b"}
    vms = [_guest_with_disk(micro_guest, workdir, f"g{i}") for i in range(4)]
    readers = {name: EventReader(srv, pair.token) for name, srv in (("a", a), ("b", b))}
    accepted: list[tuple[str, str, dict[str, Any]]] = []  # (server name, vm, task)
    races: list[dict[str, Any]] = []
    doubled: set[str] = set()
    failures: list[BaseException] = []
    lock = threading.Lock()

    def run_vm(index: int, vm: str) -> None:
        clients = {"a": pair.client(a), "b": pair.client(b)}
        try:
            for i, op in enumerate(OPS):
                if i % 3 == 0:  # both servers at once
                    answers = _race(clients, vm, op)
                    won = {n: r.json() for n, r in answers.items() if r.status_code == 202}
                    lost = {n: r.json() for n, r in answers.items() if r.status_code == 409}
                    assert len(won) + len(lost) == 2, {n: r.text for n, r in answers.items()}
                    with lock:
                        races.append({"won": won, "lost": lost})
                        accepted.extend((n, vm, t) for n, t in won.items())
                        if len(won) == 2:  # the first ended before the second came: the same op ran twice
                            doubled.update(t["id"] for t in won.values())
                    todo = list(won.values())
                else:
                    name = "a" if (index + i) % 2 == 0 else "b"
                    r = _op(clients[name], vm, op)
                    assert r.status_code == 202, r.text
                    with lock:
                        accepted.append((name, vm, r.json()))
                    todo = [r.json()]
                for task in todo:
                    wait_task(clients["a"], task["id"])
        except BaseException as err:
            failures.append(err)
        finally:
            for c in clients.values():
                c.close()

    workers = [threading.Thread(target=run_vm, args=(i, vm)) for i, vm in enumerate(vms)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(1800)
    assert not failures, failures
    assert len(accepted) >= 40

    # one task per VM across the servers: a race's loser names the winner's task and its server
    for race in races:
        for name, body in race["lost"].items():
            [(winner_name, winner)] = race["won"].items()
            assert winner_name != name and body["task_id"] == winner["id"], race
            assert body["server"] == winner["server"] and f"on server {winner['server']}" in body["error"], race
    assert any(race["lost"] for race in races), "no race was lost: the servers never met on a VM"

    with pair.client(a) as ca, pair.client(b) as cb:
        audit = [e for e in ca.get("/api/v1/audit", params={"limit": 1000}).json() if e["result"] in ("ok", "failed")]
        spans: dict[str, list[tuple[datetime, datetime, str]]] = {}
        for name, vm, task in accepted:
            t, seen_by_b = ca.get(f"/api/v1/tasks/{task['id']}").json(), cb.get(f"/api/v1/tasks/{task['id']}").json()
            assert t == seen_by_b  # one record, whichever server is asked
            assert t["server"] == task["server"] and ids[t["server"]] == name  # run by the server that accepted it
            assert t["state"] == "succeeded" or t["id"] in doubled, t  # (a repeated suspend may fail)
            # one run: the journal numbers its steps once, the first step once
            steps = t["steps"]
            assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1)), t
            assert [s["name"] for s in steps].count(FIRST_STEP[t["kind"]]) == 1, t
            # one audited outcome
            outcomes = [e for e in audit if e["detail"].split(":")[0] == f"task {t['id']}"]
            assert len(outcomes) == 1 and outcomes[0]["action"] == t["kind"], (t, outcomes)
            assert outcomes[0]["result"] == ("ok" if t["state"] == "succeeded" else "failed")
            # both event streams saw the end
            for reader in readers.values():
                end = wait_for(lambda r=reader, tid=t["id"]: task_end(r, tid), f"end of {t['id']} on a stream", 60)
                assert end["state"] == t["state"]
            if t["state"] == "succeeded":
                spans.setdefault(vm, []).append((_at(steps[0]["at"]), _at(t["finished_at"]), t["id"]))
        assert {ids[t["server"]] for _n, _v, t in accepted} == {"a", "b"}
        # the tasks of one VM never overlapped, whichever server ran them
        for vm, runs in spans.items():
            runs.sort()
            for (_s1, end1, t1), (start2, _e2, t2) in itertools.pairwise(runs):
                assert end1 <= start2, f"tasks {t1} and {t2} on {vm} overlapped"
    for reader in readers.values():
        reader.close()


def _create(c: httpx.Client, name: str, workdir: Any) -> httpx.Response:
    return c.post("/api/v1/vms", json={"name": name, "micro": True, "memory_mib": 128, "start": True,
                                       "disks": [{"size": "64M", "pool": "default"}],
                                       "serial_log": str(workdir / f"{name}.log")})


def _leftovers(conn: libvirt.virConnect, name: str) -> list[str]:
    left = [f"domain {d.name()}" for d in conn.listAllDomains() if d.name() == name]
    pool = conn.storagePoolLookupByName("default")
    pool.refresh(0)
    return left + [f"volume {v.name()}" for v in pool.listAllVolumes(0) if v.name().startswith(name)]


def test_the_survivor_cleans_up_after_a_killed_server(pair: Pair, prefix: str, workdir: Any,
                                                      conn: libvirt.virConnect) -> None:
    # A names itself as another machine would: B can tell it has gone only by its missing heartbeat
    env_a = {**HEARTBEAT, "KVMKIT_TASK_STEP_DELAY": "3", "KVMKIT_SERVER_HOST": f"{prefix}host-a"}
    a = pair.start(env_a)
    b = pair.start({**HEARTBEAT, "KVMKIT_SERVER_TIMEOUT_S": "4"})
    a_id, b_id = pair.server_id(a), pair.server_id(b)
    reader = EventReader(b, pair.token)
    name = f"{prefix}new"
    with pair.client(a) as ca, pair.client(b) as cb:
        r = _create(ca, name, workdir)
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        # the journal is in the shared database: B sees A's task reach 'defined' (domain and volume made)
        wait_for(lambda: [s["name"] for s in cb.get(f"/api/v1/tasks/{task_id}").json()["steps"]][-1:] == ["defined"],
                 "step 'defined'")
        busy = cb.post(f"/api/v1/vms/{name}/actions/start")
        assert busy.status_code == 409, busy.text
        assert (busy.json()["task_id"], busy.json()["server"]) == (task_id, a_id), busy.text
        assert _leftovers(conn, name), "the create had made nothing yet"
        a.kill()
        a_pid = a.proc.pid if a.proc else 0
        end = wait_for(lambda: task_end(reader, task_id), "the failed task on B's event stream")
        task = cb.get(f"/api/v1/tasks/{task_id}").json()
        assert end["state"] == task["state"] == "failed" and task["server"] == b_id
        err = task["error"]
        assert err.startswith("interrupted: the server stopped while the task was at step 'defined' "
                              f"(server {a_id} on {prefix}host-a, pid {a_pid}, stopped while the task ran: "
                              "no heartbeat for "), err
        assert "last heartbeat 20" in err and f"taken over by server {b_id})" in err, err
        assert f"undefined half-created VM {name}" in err and "deleted orphan volume default/" in err, err
        assert _leftovers(conn, name) == []
        rows = {row["id"]: row for row in cb.get("/api/v1/servers").json()}
        assert rows[a_id]["state"] == "dead" and rows[a_id]["reaped_by"] == b_id
        assert cb.post(f"/api/v1/vms/{name}/actions/start").status_code == 404  # not busy any more: just gone
        audit_before = cb.get("/api/v1/audit", params={"limit": 1000}).json()

        a2 = pair.start(env_a)  # the killed server started again: its start-up finds nothing left to do
        with pair.client(a2) as ca2:
            assert ca2.get(f"/api/v1/tasks/{task_id}").json() == task
            rows = {row["id"]: row for row in ca2.get("/api/v1/servers").json()}
            assert rows[a_id]["reaped_by"] == b_id and rows[a_id]["state"] == "dead"
            tasks = ca2.get("/api/v1/tasks").json()
        assert [t for t in tasks if t["state"] not in FINAL] == []
        assert [e for e in cb.get("/api/v1/audit", params={"limit": 1000}).json()
                if e["action"] == "vm.create"] == [e for e in audit_before if e["action"] == "vm.create"]
        assert "taking over" not in a2.log()
    reader.close()


def test_a_paused_server_is_taken_over_and_does_not_go_on(pair: Pair, micro_guest: Any,
                                                          conn: libvirt.virConnect) -> None:
    a = pair.start({**HEARTBEAT, "KVMKIT_TASK_STEP_DELAY": "10"})
    b = pair.start({**HEARTBEAT, "KVMKIT_SERVER_TIMEOUT_S": "3"})
    a_id, b_id = pair.server_id(a), pair.server_id(b)
    vm = micro_guest("p", start=True)
    reader = EventReader(b, pair.token)
    with pair.client(a) as ca, pair.client(b) as cb:
        r = ca.post(f"/api/v1/vms/{vm.name}/actions/suspend")
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        wait_for(lambda: cb.get(f"/api/v1/tasks/{task_id}").json()["steps"], "the suspend step")
        assert a.proc is not None
        a.proc.send_signal(signal.SIGSTOP)  # paused 10 s before it would suspend the VM
        try:
            end = wait_for(lambda: task_end(reader, task_id), "the failed task on B's event stream")
        finally:
            a.proc.send_signal(signal.SIGCONT)
        task = cb.get(f"/api/v1/tasks/{task_id}").json()
        assert end["state"] == task["state"] == "failed" and task["server"] == b_id
        assert f"(server {a_id} on " in task["error"] and "no heartbeat for" in task["error"], task["error"]
        # A wakes up: its task learns it was taken over and does not suspend the VM
        wait_for(lambda: f"task {task_id} stopped: " in a.log(), "A's task giving up")
        assert vm.dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        after = cb.get(f"/api/v1/tasks/{task_id}").json()
        assert after == task and [s["name"] for s in after["steps"]] == ["suspend"]
        # and A goes on serving under a new id
        rows = wait_for(lambda: [row for row in cb.get("/api/v1/servers").json()
                                 if row["pid"] == (a.proc.pid if a.proc else 0) and row["state"] == "up"],
                        "A's new server row")
        assert rows[0]["id"] != a_id
        assert ca.get("/readyz").status_code == 200
    reader.close()
