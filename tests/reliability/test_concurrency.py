"""50 start/stop/suspend/resume/snapshot/change calls on one VM released at once (a barrier; four waves, each
released while the previous wave's task may still run): kvmkit takes
one operation per VM at a time and answers the rest 409 naming the running task; no two tasks on the VM
overlap, every task ends, the server keeps answering, and the VM ends in the state the last successful
operation left it in, with exactly the snapshots that succeeded."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import libvirt
import pytest

from kvmkit.images import qemu_img
from tests.api.conftest import wait_task
from tests.api.server import Server

pytestmark = pytest.mark.guest
CALLS = 50
WAVES = 4
# operation -> the state it leaves the VM in (None: unchanged)
EFFECT = {"vm.start": "running", "vm.destroy": "shut-off", "vm.suspend": "paused", "vm.resume": "running",
          "vm.snapshot.create": None}
STATE = {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
         libvirt.VIR_DOMAIN_SHUTOFF: "shut-off"}


@pytest.fixture(scope="module")
def admin() -> Iterator[httpx.Client]:
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    try:
        limits = httpx.Limits(max_connections=CALLS + 10, max_keepalive_connections=CALLS + 10)
        with srv.client(srv.token("admin"), limits=limits) as c:
            yield c
    finally:
        srv.cleanup()


def _call(c: httpx.Client, vm: str, i: int) -> httpx.Response:
    op = ("start", "destroy", "snapshot", "suspend", "resume", "set")[i % 6]
    if op == "snapshot":
        return c.post(f"/api/v1/vms/{vm}/snapshots", json={"name": f"s{i}"})
    if op == "set":
        return c.patch(f"/api/v1/vms/{vm}", json={"autostart": i % 4 == 1})
    return c.post(f"/api/v1/vms/{vm}/actions/{op}")


def _at(s: str) -> datetime:
    return datetime.fromisoformat(s)


def test_fifty_concurrent_operations_on_one_vm_are_serialised(admin: httpx.Client, micro_guest, workdir,
                                                              conn) -> None:
    disk = workdir / "disk.qcow2"
    qemu_img.create(disk, "qcow2", 64 * 1024**2)
    disk.chmod(0o666)
    guest = micro_guest("busy", disks=[{"path": str(disk), "format": "qcow2"}])
    vm = guest.name
    answers: list[tuple[int, httpx.Response]] = []
    for wave in range(WAVES):  # each wave: 50 calls released together, while the last wave's task may run
        barrier = threading.Barrier(CALLS)

        def one(i: int, barrier: threading.Barrier = barrier) -> tuple[int, httpx.Response]:
            barrier.wait(timeout=60)
            return i, _call(admin, vm, i)

        with ThreadPoolExecutor(CALLS) as pool:
            answers += pool.map(one, range(wave * CALLS, (wave + 1) * CALLS))
        assert admin.get(f"/api/v1/vms/{vm}").status_code == 200  # the server answers while tasks run

    accepted: dict[str, int] = {}
    busy_with: list[str] = []
    for i, r in answers:
        assert r.status_code in (200, 202, 409), (i, r.status_code, r.text)
        if r.status_code == 202:
            accepted[r.json()["id"]] = i
        elif r.status_code == 409:
            body = r.json()
            assert body["code"] == "conflict" and body["task_id"] and body["task_id"] in body["error"], body
            busy_with.append(body["task_id"])
    assert accepted, "no call was taken"
    tasks = [wait_task(admin, t, timeout=600) for t in accepted]  # every task ends: no deadlock
    assert all(t["state"] in ("succeeded", "failed") for t in tasks)
    # a 409 names a task that was running (one of ours) or a short synchronous change (PATCH)
    assert {t for t in busy_with if not t.startswith("sync-")} <= set(accepted), busy_with
    # no two tasks on the VM overlapped: each was created after the one before had finished
    ordered = sorted(tasks, key=lambda t: _at(t["created_at"]))
    for before, after in itertools.pairwise(ordered):
        assert _at(after["created_at"]) >= _at(before["finished_at"]), (before, after)
    # failures are refusals for the state the VM was in at that moment, never an internal error
    for t in tasks:
        if t["state"] == "failed":
            assert "internal error" not in t["error"] and "cannot" in t["error"], t
    # the final state is what the last successful operation left, and the snapshots are the successful ones
    state = "running"
    for t in sorted((t for t in tasks if t["state"] == "succeeded"), key=lambda t: _at(t["finished_at"])):
        state = EFFECT[t["kind"]] or state
    dom = conn.lookupByName(vm)
    assert STATE.get(dom.state()[0]) == state, (dom.state(), [(t["kind"], t["state"]) for t in ordered])
    made = {t["result"]["name"] for t in tasks if t["kind"] == "vm.snapshot.create" and t["state"] == "succeeded"}
    assert {s.getName() for s in dom.listAllSnapshots(0)} == made
    assert admin.get("/healthz").status_code == 200 and admin.get("/api/v1/vms").status_code == 200
