"""Kill ``kvmkit serve`` at a chosen step of a task, start it again, and check what was left.

A :class:`KillCase` says how to prepare the objects a task works on (``setup``), how to submit the task
through the API (``submit``) and which steps its journal goes through (``steps``). :func:`kill_at_step`
submits it to a server whose tasks pause after every journalled step (``KVMKIT_TASK_STEP_DELAY``), waits
until the journal holds exactly K steps (the task then sleeps after journalling step K, before taking it),
SIGKILLs the server, starts it again on the same database and data directory, and checks the invariants:

- the task is ``failed`` with an error that names the interruption and step K;
- nothing that existed before is lost: every domain (same UUID), snapshot, volume and file of the test
  (named with its prefix or under its work directory) is still there, unless the case expects it to be gone
  at that step (``expect(k)`` -> what may be gone, what may be new);
- nothing new is left over (no orphan domain, volume, snapshot or file) beyond what ``expect(k)`` allows;
- the server is healthy (``/readyz``) and the case's own ``check`` holds (e.g. the VM still starts).

Adding a task kind is one more KillCase in a parametrisation (see tests/reliability/test_server_kill.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import libvirt

from tests.api.server import Server

ADMIN = "admin"


class CrashServer:
    """A server (SQLite in its data directory) that can be SIGKILLed and started again on the same state."""

    def __init__(self, *, step_delay: float = 2.0) -> None:
        self.env = {"KVMKIT_TASK_STEP_DELAY": str(step_delay)}
        self.server = Server("sqlite", env=self.env)
        self.server.cli("user", "add", ADMIN, "--role", "admin")
        self.server.start()
        self.token = self.server.token(ADMIN)
        self.restarts = 0

    def client(self) -> httpx.Client:
        return self.server.client(self.token)

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        """Start a new server process on the same database and data directory (its recovery runs first)."""
        self.server.stop()
        self.server = Server(self.server.db, data_dir=self.server.data_dir, env=self.env).start()
        self.restarts += 1

    def cleanup(self) -> None:
        self.server.cleanup()


# --- what exists --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Inventory:
    domains: frozenset[tuple[str, str]]       # (name, uuid)
    snapshots: frozenset[tuple[str, str]]     # (vm, snapshot)
    volumes: frozenset[str]                   # pool/volume
    files: frozenset[str]                     # paths under the work directory (not logs)

    def items(self) -> set[tuple[str, str]]:
        return ({("domain", f"{n} {u}") for n, u in self.domains}
                | {("snapshot", f"{v}/{s}") for v, s in self.snapshots}
                | {("volume", v) for v in self.volumes} | {("file", f) for f in self.files})


def inventory(conn: libvirt.virConnect, prefix: str, workdir: Path) -> Inventory:
    domains, snaps = set(), set()
    for dom in conn.listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        domains.add((dom.name(), dom.UUIDString()))
        with contextlib.suppress(libvirt.libvirtError):
            snaps |= {(dom.name(), s.getName()) for s in dom.listAllSnapshots(0)}
    volumes = set()
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):  # "asynchronous jobs running" (another test's upload)
            pool.refresh(0)
        with contextlib.suppress(libvirt.libvirtError):
            for vol in pool.listAllVolumes(0):
                if vol.name().startswith(prefix) or vol.path().startswith(str(workdir) + "/"):
                    volumes.add(f"{pool.name()}/{vol.name()}")
    files = {str(p) for p in workdir.rglob("*") if p.is_file() and not p.name.endswith(".log")}
    return Inventory(frozenset(domains), frozenset(snaps), frozenset(volumes), frozenset(files))


# --- cases ----------------------------------------------------------------------------------------------

@dataclass
class World:
    """What a case works with: the libvirt connection, the test's prefix and work directory, a micro-guest
    factory, and whatever the case's setup recorded (``vars``)."""

    conn: libvirt.virConnect
    prefix: str
    workdir: Path
    micro_guest: Callable[..., Any]
    vars: dict[str, Any] = field(default_factory=dict)


Change = tuple[set[tuple[str, str]], set[tuple[str, str]]]  # (may be gone, may be new)


@dataclass(frozen=True)
class KillCase:
    id: str
    kind: str                                                  # the task kind, e.g. "vm.create"
    steps: tuple[str, ...]                                     # the journal of an uninterrupted run
    setup: Callable[[World], None]
    submit: Callable[[httpx.Client, World], httpx.Response]
    expect: Callable[[World, int], Change] = lambda _w, _k: (set(), set())
    check: Callable[[World, int, dict[str, Any]], None] = lambda _w, _k, _t: None

    def points(self) -> list[tuple[KillCase, int]]:
        return [(self, k) for k in range(1, len(self.steps) + 1)]


def point_id(point: tuple[KillCase, int]) -> str:
    case, k = point
    return f"{case.id}@{k}-{case.steps[k - 1]}"


def wait_for_step(client: httpx.Client, task_id: str, k: int, timeout: float = 180) -> dict[str, Any]:
    """Poll the task until its journal holds K steps; fail if it ends before."""
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/api/v1/tasks/{task_id}").json()
        if len(task.get("steps") or []) >= k:
            return task
        if task["state"] not in ("queued", "running"):
            raise AssertionError(f"task ended ({task['state']}: {task['error']}) before step {k}: "
                                 f"{[s['name'] for s in task.get('steps') or []]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} did not reach step {k} in {timeout} s: {task}")
        time.sleep(0.05)


def kill_at_step(srv: CrashServer, case: KillCase, k: int, world: World) -> dict[str, Any]:
    """Run ``case`` on ``srv``, SIGKILL the server when its journal reaches step ``k``, restart it and check
    the invariants. Returns the recovered task."""
    case.setup(world)
    before = inventory(world.conn, world.prefix, world.workdir)
    with srv.client() as c:
        r = case.submit(c, world)
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        assert r.json()["kind"] == case.kind
        seen = wait_for_step(c, task_id, k)
    srv.kill()
    journal = [s["name"] for s in seen["steps"]]
    assert journal == list(case.steps[:k]), f"the journal {journal} does not start with {case.steps[:k]}"
    srv.restart()
    with srv.client() as c:
        task = c.get(f"/api/v1/tasks/{task_id}").json()
        assert c.get("/readyz").status_code == 200
    assert task["state"] == "failed", task
    assert [s["name"] for s in task["steps"]] == list(case.steps[:k]), "the journal moved on before the kill"
    want = f"interrupted: the server stopped while the task was at step '{case.steps[k - 1]}'"
    assert task["error"].startswith(want), task["error"]
    after = inventory(world.conn, world.prefix, world.workdir)
    may_go, may_come = case.expect(world, k)
    lost = before.items() - after.items() - may_go
    assert not lost, f"lost after a kill at step {k}: {sorted(lost)}; recovery said: {task['error']}"
    left = after.items() - before.items() - may_come
    assert not left, f"left over after a kill at step {k}: {sorted(left)}; recovery said: {task['error']}"
    case.check(world, k, task)
    return task


def learn_steps(srv: CrashServer, case: KillCase, world: World, timeout: float = 600) -> tuple[str, ...]:
    """Run ``case`` once to the end and return its journal (for a case written without ``steps``)."""
    case.setup(world)
    with srv.client() as c:
        r = case.submit(c, world)
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        deadline = time.monotonic() + timeout
        while (task := c.get(f"/api/v1/tasks/{task_id}").json())["state"] in ("queued", "running"):
            assert time.monotonic() < deadline, f"task {task_id} did not end: {task}"
            time.sleep(0.2)
    assert task["state"] == "succeeded", f"the uninterrupted {case.id} failed: {task['error']}"
    return tuple(s["name"] for s in task["steps"])


def reset(world: World) -> None:
    """Remove everything the test made (its prefix, its work directory's files) to start a case afresh."""
    import shutil

    from tests.support.cleanup import sweep

    sweep(world.conn, world.prefix)
    for child in world.workdir.iterdir():
        if child.is_dir():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    world.vars.clear()


def kill_at_every_step(srv: CrashServer, case: KillCase, world: World) -> list[dict[str, Any]]:
    """For a case without ``steps``: learn its journal from one uninterrupted run, then kill the server at
    each step of a fresh run (the world reset in between). Adding a task kind is then one KillCase with a
    setup and a submit (see LEARNED in test_server_kill.py)."""
    import dataclasses

    steps = learn_steps(srv, case, world)
    assert steps, f"{case.id} journals no step"
    tasks = []
    for k in range(1, len(steps) + 1):
        reset(world)
        tasks.append(kill_at_step(srv, dataclasses.replace(case, steps=steps), k, world))
    return tasks
