"""Migration over HTTP, on a server of the test's own with the test bed's hosts (local and c in maintenance,
see tests/migration/conftest.py): admins only; a pre-check refusal answers 409 with every check; a migration
is a task whose progress is on the task and the event stream, and whose result carries the measured
downtime; a cancel of the task aborts the job (the VM stays); evacuate empties a host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN_PASSWORD, wait_task
from tests.api.server import EventReader, Server
from tests.migration.conftest import defined_on, guest

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def mserver() -> Iterator[Server]:
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    srv.cli("user", "add", "op", "--role", "operator", "--password-stdin", stdin="operator-pass-123\n")
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture()
def api(mserver: Server, hosts: Any) -> Iterator[httpx.Client]:
    with mserver.client(mserver.token("admin")) as c:
        for h in hosts:
            assert c.post("/api/v1/hosts", json={"name": h.letter, "uri": h.uri}).status_code == 201
        for name in ("local", "c"):
            c.post(f"/api/v1/hosts/{name}/maintenance", json={"on": True})
        yield c
        for h in hosts:
            h.heal()
            c.delete(f"/api/v1/hosts/{h.letter}", params={"force": True})
        c.post("/api/v1/hosts/local/maintenance", json={"on": False})


def test_migrate_over_http(api: httpx.Client, mserver: Server, hosts: Any) -> None:
    g = guest(hosts, "a")
    with mserver.client(mserver.token("op")) as op:
        assert op.post(f"/api/v1/vms/{g.name}/migrate", params={"host": "a"}, json={"to": "b"}).status_code == 403

    api.patch("/api/v1/hosts/b", json={"max_memory": "64M"})
    refused = api.post(f"/api/v1/vms/{g.name}/migrate", params={"host": "a"}, json={"to": "b"})
    assert refused.status_code == 409, refused.text
    body = refused.json()
    assert body["code"] == "migration_refused" and "memory" in body["error"]
    assert {c["name"]: c["status"] for c in body["checks"]}["memory"] == "fail"
    api.patch("/api/v1/hosts/b", json={"max_memory": "0"})
    check = api.post(f"/api/v1/vms/{g.name}/migrate/check", params={"host": "a"}, json={"to": "b"}).json()
    assert check["ok"] and check["transport"] == "peer-to-peer"

    events = EventReader(mserver, mserver.token("admin"))
    try:
        r = api.post(f"/api/v1/vms/{g.name}/migrate", params={"host": "a"}, json={"to": "b", "bandwidth_mib": 20})
        assert r.status_code == 202, r.text
        task = wait_task(api, r.json()["id"])
        assert task["state"] == "succeeded", task
        assert task["target"] == f"vm:{g.name}@a"
        res = task["result"]
        assert res["to"] == "b" and res["downtime_ms"] is not None and res["unsafe"] is False  # no disk
        ev = events.wait(timeout=30, type="migration", vm=g.name, phase="copying")
        assert ev["to"] == "b" and ev["data_total"] > 0 and "data_remaining" in ev and "expected_downtime_ms" in ev
        moving = events.wait(timeout=30, type="task")  # progress went out as task events too
        assert moving["task"]["id"] == task["id"] or any(
            e.get("type") == "task" and e["task"]["id"] == task["id"] for e in events.events)
    finally:
        events.close()
    assert defined_on(hosts, g.name) == {"b": (True, True)}
    assert api.get(f"/api/v1/vms/{g.name}", params={"host": "b"}).json()["host"] == "b"

    slow = api.post(f"/api/v1/vms/{g.name}/migrate", params={"host": "b"}, json={"to": "a", "bandwidth_mib": 1})
    assert slow.status_code == 202
    tid = slow.json()["id"]
    busy = api.post(f"/api/v1/vms/{g.name}/actions/suspend", params={"host": "b"})
    assert busy.status_code == 409 and busy.json()["task_id"] == tid
    seen = None
    for _ in range(600):
        t = api.get(f"/api/v1/tasks/{tid}").json()
        if "MiB left" in (t["message"] or "") and t["percent"] > 5:
            seen = t
            break
        time.sleep(0.2)
    assert seen is not None, "no progress on the task"
    assert api.post(f"/api/v1/tasks/{tid}/cancel").status_code == 200
    done = wait_task(api, tid)
    assert done["state"] == "cancelled" and "defined there only" in done["error"], done
    assert defined_on(hosts, g.name) == {"b": (True, True)}

    ev = api.post("/api/v1/hosts/b/evacuate", json={})
    assert ev.status_code == 202
    out = wait_task(api, ev.json()["id"])
    assert out["state"] == "succeeded", out
    assert out["result"]["empty"] and [m["vm"] for m in out["result"]["moved"]] == [g.name]
    assert defined_on(hosts, g.name) == {"a": (True, True)}
    assert api.get("/api/v1/hosts/b").json()["maintenance"] is True
    g.log.wait_status(timeout=60, after=len(g.log.text()))
    assert g.log.text().count("KVMKIT-GUEST-READY") == 1
