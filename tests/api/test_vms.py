"""VMs through the API: a micro-guest created by the API boots and its events stream; one task per VM
(409 naming the running task), different VMs in parallel, cancel; a server SIGKILLed during a create and
restarted leaves no orphan volume and a failed task saying why."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import httpx
import libvirt
import pytest

from tests.api.conftest import new_db_url, wait_task
from tests.api.server import EventReader, Server
from tests.support.serial import SerialLog

pytestmark = pytest.mark.guest


def test_vm_created_through_api_boots_and_its_events_stream(server: Server, admin: httpx.Client, prefix: str,
                                                            workdir, micro_image) -> None:
    name = f"{prefix}ev"
    log = SerialLog(workdir / f"{name}.serial.log")
    events = EventReader(server, server.token("admin"))
    try:
        r = admin.post("/api/v1/vms", json={"name": name, "micro": True, "memory_mib": "256M", "start": True,
                                            "serial_log": str(log.path)})
        assert r.status_code == 202, r.text
        assert r.headers["location"] == f"/api/v1/tasks/{r.json()['id']}"
        task = wait_task(admin, r.json()["id"])
        assert task["state"] == "succeeded", task["error"]
        steps = [s["name"] for s in task["steps"]]
        assert steps[0] == "create" and "start" in steps
        log.wait_for("KVMKIT-GUEST-READY")
        log.wait_for("KVMKIT-STATUS")  # acpid runs: the ready marker comes before it, a press then is lost
        events.wait(kind="vm", vm=name, event="defined")
        events.wait(kind="vm", vm=name, event="started")
        events.wait(kind="task")
        shown = admin.get(f"/api/v1/vms/{name}").json()
        assert shown["state"] == "running"

        # ACPI shutdown; under a loaded shared CPU the guest may be slow, so power off after 60 s
        r = admin.post(f"/api/v1/vms/{name}/actions/shutdown", params={"timeout": 60, "force": True})
        task = wait_task(admin, r.json()["id"], timeout=180)
        assert task["state"] == "succeeded", task["error"]
        events.wait(kind="vm", vm=name, event="stopped")
        r = admin.delete(f"/api/v1/vms/{name}", params={"storage": True})
        assert wait_task(admin, r.json()["id"])["state"] == "succeeded"
        events.wait(kind="vm", vm=name, event="undefined")
        assert admin.get(f"/api/v1/vms/{name}").status_code == 404
    finally:
        events.close()


@pytest.fixture()
def slow_server(backend: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server whose tasks pause 3 s after each journalled step (KVMKIT_TASK_STEP_DELAY)."""
    srv = Server(new_db_url(backend, request), env={"KVMKIT_TASK_STEP_DELAY": "3"})
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    yield srv
    srv.cleanup()


def test_one_task_per_vm_409_parallel_across_vms_and_cancel(slow_server: Server, prefix: str, conn,
                                                            micro_image) -> None:
    x, y = f"{prefix}x", f"{prefix}y"
    with slow_server.client(slow_server.token("admin")) as c:
        tx = c.post("/api/v1/vms", json={"name": x, "micro": True, "memory_mib": 128}).json()["id"]
        r = c.post("/api/v1/vms", json={"name": x, "micro": True, "memory_mib": 128})
        assert r.status_code == 409 and r.json()["task_id"] == tx, r.text
        r = c.post(f"/api/v1/vms/{x}/actions/start")
        assert r.status_code == 409 and r.json()["task_id"] == tx
        assert tx in r.json()["error"]
        ty = c.post("/api/v1/vms", json={"name": y, "micro": True, "memory_mib": 128}).json()["id"]
        deadline = time.monotonic() + 120  # a guard: both start within a second when idle
        while True:  # both run at the same time
            states = {c.get(f"/api/v1/tasks/{t}").json()["state"] for t in (tx, ty)}
            if states == {"running"}:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.2)
        assert c.post(f"/api/v1/tasks/{ty}/cancel").status_code == 200
        assert wait_task(c, ty)["state"] == "cancelled"
        assert wait_task(c, tx)["state"] == "succeeded"
        assert c.post(f"/api/v1/tasks/{tx}/cancel").status_code == 409  # finished: nothing to cancel
    names = {d.name() for d in conn.listAllDomains()}
    assert x in names and y not in names  # the cancelled create left nothing behind


def _volumes(conn: libvirt.virConnect, prefix: str) -> list[str]:
    pool = conn.storagePoolLookupByName("default")
    with contextlib.suppress(libvirt.libvirtError):  # "asynchronous jobs running" (another test's upload)
        pool.refresh(0)
    return [v.name() for v in pool.listAllVolumes() if v.name().startswith(prefix)]


def test_server_killed_during_create_leaves_no_orphan_and_a_failed_task(slow_server: Server, prefix: str, conn,
                                                                        micro_image) -> None:
    name = f"{prefix}crash"
    with slow_server.client(slow_server.token("admin")) as c:
        r = c.post("/api/v1/vms", json={"name": name, "micro": True, "memory_mib": 128,
                                        "disks": [{"size": "64M", "pool": "default"}]})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while not _volumes(conn, prefix):
            assert time.monotonic() < deadline, f"no volume appeared: {c.get(f'/api/v1/tasks/{task_id}').text}"
            time.sleep(0.2)
    slow_server.kill()
    assert _volumes(conn, prefix), "the volume must exist when the server dies"

    restarted = Server(slow_server.db, data_dir=slow_server.data_dir).start()
    try:
        with restarted.client(restarted.token("admin")) as c:
            task = c.get(f"/api/v1/tasks/{task_id}").json()
        assert task["state"] == "failed"
        assert "interrupted: the server stopped while the task was at step" in task["error"]
        assert "deleted orphan volume default/" in task["error"]
        assert task["steps"][0]["name"] == "create"
        assert _volumes(conn, prefix) == []
        assert name not in {d.name() for d in conn.listAllDomains()}
    finally:
        restarted.stop()


def test_get_vm_describes_valid_domains_a_spec_cannot_hold(admin: httpx.Client, conn, prefix: str):
    from tests.service.vms.test_vm_query import ODD_DOMAINS, odd_domain

    for case in sorted(ODD_DOMAINS):
        conn.defineXML(odd_domain(f"{prefix}{case}", case))
        r = admin.get(f"/api/v1/vms/{prefix}{case}")
        assert r.status_code == 200, r.text
        assert r.json()["name"] == f"{prefix}{case}"
    assert admin.get(f"/api/v1/vms/{prefix}dies").json()["topology"]["dies"] == 2
