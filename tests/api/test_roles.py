"""Roles (viewer reads, operator acts on VMs, admin manages users/pools/networks) and per-VM delegation,
against a real server and real (defined, micro-guest) VMs; the audit log records who did what."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.conftest import wait_task
from tests.api.server import EventReader

pytestmark = pytest.mark.guest
ACTIONS = ("start", "shutdown", "reboot", "destroy", "suspend", "resume")


def _vm_changes(vm: str) -> list[tuple[str, str, dict]]:
    return ([("POST", f"/api/v1/vms/{vm}/actions/{a}", {}) for a in ACTIONS]
            + [("DELETE", f"/api/v1/vms/{vm}", {}), ("PATCH", f"/api/v1/vms/{vm}", {"autostart": False}),
               ("POST", f"/api/v1/vms/{vm}/snapshots", {"name": "s1"}),
               ("POST", f"/api/v1/vms/{vm}/snapshots/s1/revert", {}),
               ("DELETE", f"/api/v1/vms/{vm}/snapshots/s1", {})])


def test_role_matrix(micro_guest, make_user, admin: httpx.Client) -> None:
    vm = micro_guest("a", start=False).name
    _, viewer = make_user("viewer", "viewer")
    op_name, operator = make_user("oper", "operator")

    # viewer: reads, nothing else
    assert vm in [v["name"] for v in viewer.get("/api/v1/vms").json()]
    assert viewer.get(f"/api/v1/vms/{vm}").status_code == 200
    for method, url, body in _vm_changes(vm):
        assert viewer.request(method, url, json=body).status_code == 403, url
    assert viewer.post("/api/v1/vms", json={"name": vm + "x", "micro": True}).status_code == 403
    # operator: VMs yes; users, pools, networks, audit no
    for c in (viewer, operator):
        assert c.get("/api/v1/users").status_code == 403
        assert c.post("/api/v1/users", json={"name": "nobody1", "role": "admin"}).status_code == 403
        assert c.post("/api/v1/pools/default/actions/refresh").status_code == 403
        assert c.post("/api/v1/networks/default/actions/start").status_code == 403
        assert c.get("/api/v1/audit").status_code == 403
    r = operator.patch(f"/api/v1/vms/{vm}", json={"autostart": True, "vcpus": 2, "config": True})
    assert r.status_code == 200, r.text
    assert admin.get(f"/api/v1/vms/{vm}").json()["autostart"] is True
    assert operator.patch(f"/api/v1/vms/{vm}", json={"autostart": False}).status_code == 200
    r = operator.post(f"/api/v1/vms/{vm}/actions/start")
    assert r.status_code == 202, r.text
    assert wait_task(operator, r.json()["id"])["state"] == "succeeded"
    assert operator.get(f"/api/v1/vms/{vm}").json()["state"] == "running"
    r = operator.post(f"/api/v1/vms/{vm}/actions/destroy")
    assert wait_task(operator, r.json()["id"])["state"] == "succeeded"
    # a wrong-state action is a failed task that says why
    r = operator.post(f"/api/v1/vms/{vm}/actions/suspend")
    task = wait_task(operator, r.json()["id"])
    assert task["state"] == "failed" and "shut" in task["error"]
    # admin: manages pools and reads the audit log, which names who did what to which VM
    assert admin.post("/api/v1/pools/default/actions/refresh").status_code == 200
    entries = admin.get("/api/v1/audit", params={"user": op_name, "limit": 50}).json()
    started = [e for e in entries if e["action"] == "vm.start" and e["target"] == f"vm:{vm}"]
    assert started and started[0]["result"] == "ok"
    assert any(e["action"].startswith("POST /api/v1/vms/") and e["result"] == "accepted" for e in entries)
    denied = admin.get("/api/v1/audit", params={"action": "POST /api/v1/users", "limit": 50}).json()
    assert any(e["result"] == "denied" for e in denied)


def test_delegated_user_sees_and_acts_on_its_vms_alone(micro_guest, make_user, admin: httpx.Client,
                                                       prefix: str, server) -> None:
    a = micro_guest("a", start=False).name
    b = micro_guest("b", start=False).name
    name, user = make_user("deleg", "operator")
    r = admin.post(f"/api/v1/users/{name}/grants", json={"vm": a})
    assert r.status_code == 201 and r.json()["vm_scope"] == "granted"

    assert [v["name"] for v in user.get("/api/v1/vms").json()] == [a]
    assert user.get(f"/api/v1/vms/{a}").status_code == 200
    assert user.get(f"/api/v1/vms/{b}").status_code == 404
    assert user.get(f"/api/v1/vms/{b}/snapshots").status_code == 404
    assert user.get(f"/api/v1/vms/{a}/snapshots").json() == []
    for method, url, body in _vm_changes(b):
        r = user.request(method, url, json=body)
        assert r.status_code in (403, 404), f"{method} {url}: {r.status_code}"
    assert user.post("/api/v1/vms", json={"name": f"{prefix}c", "micro": True}).status_code == 403
    assert user.get("/api/v1/pools").status_code == 403
    events = EventReader(server, user.headers["authorization"].split()[1])
    everything = EventReader(server, admin.headers["authorization"].split()[1])  # the admin sees all events
    try:
        # the delegated VM works
        r = user.post(f"/api/v1/vms/{a}/actions/start")
        assert r.status_code == 202
        assert wait_task(user, r.json()["id"])["state"] == "succeeded"
        # tasks and events of B are invisible to the user
        r = admin.post(f"/api/v1/vms/{b}/actions/start")
        tb = r.json()["id"]
        assert wait_task(admin, tb)["state"] == "succeeded"
        events.wait(kind="vm", vm=a, event="started")
        # Once the admin's stream has B's start and B's finished task, both were published; an event of A
        # published after that reaches the user's (ordered) stream after any of B's would have, so when it is
        # there B's absence is proved, without waiting for a while.
        everything.wait(kind="vm", vm=b, event="started")
        deadline = time.monotonic() + 60
        while not [e for e in everything.events if (e.get("task") or {}).get("id") == tb
                   and e["task"]["state"] == "succeeded"]:
            assert time.monotonic() < deadline, "the admin never saw B's task finish"
            time.sleep(0.1)
        r = user.post(f"/api/v1/vms/{a}/actions/suspend")
        assert r.status_code == 202 and wait_task(user, r.json()["id"])["state"] == "succeeded"
        events.wait(kind="vm", vm=a, event="suspended")
        assert not [e for e in events.events if e.get("vm") == b or (e.get("task") or {}).get("id") == tb]
    finally:
        events.close()
        everything.close()
    assert user.get(f"/api/v1/tasks/{tb}").status_code == 404
    assert tb not in [t["id"] for t in user.get("/api/v1/tasks").json()]

    # delegation to a group
    gname = f"{prefix}grp"
    gu_name, gu = make_user("gu", "viewer", vm_scope="granted")
    assert gu.get("/api/v1/vms").json() == []
    assert admin.post("/api/v1/groups", json={"name": gname}).status_code == 201
    assert admin.post(f"/api/v1/groups/{gname}/members", json={"user": gu_name}).status_code == 201
    assert admin.post(f"/api/v1/groups/{gname}/grants", json={"vm": b}).status_code == 201
    assert [v["name"] for v in gu.get("/api/v1/vms").json()] == [b]
    assert gu.get(f"/api/v1/vms/{a}").status_code == 404
    assert admin.delete(f"/api/v1/groups/{gname}").status_code == 204
    assert gu.get("/api/v1/vms").json() == []


@pytest.mark.guest
@pytest.mark.parametrize("field", [{"disks": [{"path": "/etc/shadow", "format": "raw"}]},
                                   {"kernel": "/etc/shadow"}, {"serial_log": "/etc/passwd"},
                                   {"cloud_init": {"user_data": "/etc/shadow"}}])
def test_operators_may_not_point_a_vm_at_host_paths(make_user, prefix, field):
    _name, op = make_user("hostpath", "operator")
    body = {"name": f"{prefix}hp", **({"micro": True} if "kernel" not in field else {}), **field}
    r = op.post("/api/v1/vms", json=body)
    assert r.status_code == 403, r.text
    assert "host paths" in r.json()["error"]
    assert op.get(f"/api/v1/vms/{prefix}hp").status_code == 404
