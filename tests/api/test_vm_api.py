"""VMs through the API only, against a real `kvmkit serve` on qemu:///system with micro-guests: a micro-guest
provisioned by POST /vms is cloned linked and the clone boots; it is backed up and restored under another
name, which boots; a NIC is attached and detached live (the guest sees it, then lets it go); the XML is
replaced with a harmless change (diff answered) and refused when libvirt's schema rejects it (422 naming the
element) or when it would drop a device the running VM uses (409); pinning, stats and rename answer; roles
and host paths are enforced. A server killed during a clone leaves a failed task and no clone.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import libvirt
import pytest
from lxml import etree

from tests.api.conftest import wait_task
from tests.api.guest_http import console_run, create_micro, deleting, ok_task, wait_console
from tests.api.server import EventReader, Server

pytestmark = pytest.mark.guest
READY = "KVMKIT-GUEST-READY"


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    """One SQLite-backed server for this module (the routes are the same on PostgreSQL)."""
    server = Server("sqlite")
    server.cli("user", "add", "admin", "--role", "admin")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def admin_token(srv: Server) -> str:
    return srv.token("admin")


@pytest.fixture()
def api(srv: Server, admin_token: str) -> Iterator[httpx.Client]:
    with srv.client(admin_token) as client:
        yield client


def _user(srv: Server, api: httpx.Client, name: str, role: str, **extra) -> httpx.Client:
    r = api.post("/api/v1/users", json={"name": name, "role": role, "password": "pass-" + name, **extra})
    assert r.status_code == 201, r.text
    return srv.client(api.post("/api/v1/tokens", json={"name": "t", "user": name}).json()["token"])


def test_clone_linked_backup_and_restore_boot(srv: Server, api: httpx.Client, prefix: str, conn,
                                              micro_image) -> None:
    src, clone, restored = f"{prefix}src", f"{prefix}lc", f"{prefix}rs"
    events = EventReader(srv, srv.token("admin"))
    with contextlib.closing(events), deleting(api, src, clone, restored):
        create_micro(api, src, start=False, disks=[{"size": "64M", "pool": "default"}],
                     nics=[{"source": "default"}])
        # linked clone: a task whose journal and percent show the copy; the clone has its own identity
        task = ok_task(api, api.post(f"/api/v1/vms/{src}/clone", json={"name": clone, "linked": True}))
        assert task["kind"] == "vm.clone" and task["target"] == f"vm:{src}" and task["percent"] == 100
        assert task["steps"][0]["name"] == "clone" and task["steps"][0]["data"]["vm"] == clone
        result = task["result"]
        assert result["linked"] and result["source_snapshot"] == f"linked-{clone}"
        assert result["disks"][0]["backing"], result
        shown = {n: api.get(f"/api/v1/vms/{n}").json() for n in (src, clone)}
        assert shown[src]["uuid"] != shown[clone]["uuid"] and set(shown[src]["macs"]).isdisjoint(shown[clone]["macs"])
        r = api.post(f"/api/v1/vms/{src}/clone", json={"name": clone})
        assert r.status_code == 409 and clone in r.json()["error"]
        ok_task(api, api.post(f"/api/v1/vms/{clone}/actions/start"))
        wait_console(api, clone, READY)

        # backup of the (shut-off) source into the server's data directory, then restore as a new VM
        task = ok_task(api, api.post(f"/api/v1/vms/{src}/backups", json={}))
        path = task["result"]["path"]
        # the tasks' progress is on the event stream: the clone's step, the backup's copy percent, the ends
        assert "cloning" in _seen(events, "vm.clone", 5)["message"]
        assert any(ev["task"]["kind"] == "vm.backup" and 5 < ev["task"]["percent"] < 100
                   and "backing up" in ev["task"]["message"] for ev in _task_events(events)), _task_events(events)
        assert {"vm.clone", "vm.backup"} <= {ev["task"]["kind"] for ev in _task_events(events)
                                             if ev["task"]["state"] == "succeeded"}
        assert Path(path).is_relative_to(srv.data_dir / "backups" / src), path
        assert task["result"]["sha256"] and (Path(path) / "manifest.json").is_file()
        task = ok_task(api, api.post("/api/v1/backups/restore", json={"path": path, "name": restored}))
        assert task["target"] == f"vm:{restored}" and task["result"]["renamed"]
        assert task["result"]["uuid"] != shown[src]["uuid"]
        ok_task(api, api.post(f"/api/v1/vms/{restored}/actions/start"))
        wait_console(api, restored, READY)
        # under a name that exists: refused at once, nothing started
        r = api.post("/api/v1/backups/restore", json={"path": path, "name": clone})
        assert r.status_code == 409 and "exists already" in r.json()["error"]
        r = api.post("/api/v1/backups/restore", json={"path": str(srv.data_dir)})
        assert r.status_code == 404 and "not a kvmkit backup" in r.json()["error"]


def _task_events(events: EventReader) -> list[dict]:
    return [ev for ev in list(events.events) if ev["kind"] == "task" and ev.get("task")]


def _seen(events: EventReader, kind: str, percent: int) -> dict:
    """The task part of the first event of a ``kind`` task at ``percent`` (waiting for it)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for ev in _task_events(events):
            if ev["task"]["kind"] == kind and ev["task"]["percent"] == percent:
                return dict(ev["task"])
        time.sleep(0.2)
    raise AssertionError(f"no {kind} event at {percent}%: {_task_events(events)[-5:]}")


def test_backup_paths_and_copy_roles(srv: Server, api: httpx.Client, prefix: str, workdir, micro_image) -> None:
    vm, hidden = f"{prefix}r", f"{prefix}hidden"
    with deleting(api, vm, hidden):
        create_micro(api, vm, start=False)
        create_micro(api, hidden, start=False, disks=[{"size": "16M"}])
        operator = _user(srv, api, f"{prefix}op", "operator")
        viewer = _user(srv, api, f"{prefix}view", "viewer")
        delegated = _user(srv, api, f"{prefix}dg", "operator", vm_scope="granted")
        assert api.post(f"/api/v1/users/{prefix}dg/grants", json={"vm": vm}).status_code == 201
        outside = str(workdir / "bk")
        r = operator.post(f"/api/v1/vms/{vm}/backups", json={"destination": outside})
        assert r.status_code == 403 and "only under" in r.json()["error"]
        r = operator.post("/api/v1/backups/restore", json={"path": outside})
        assert r.status_code == 403
        assert operator.post(f"/api/v1/vms/{vm}/backups", json={"destination": "relative/dir"}).status_code == 422
        assert viewer.post(f"/api/v1/vms/{vm}/backups", json={}).status_code == 403
        assert viewer.post(f"/api/v1/vms/{vm}/clone", json={"name": f"{prefix}x"}).status_code == 403
        r = delegated.post(f"/api/v1/vms/{vm}/clone", json={"name": f"{prefix}x"})
        assert r.status_code == 403 and "delegated" in r.json()["error"]
        assert delegated.post(f"/api/v1/vms/{vm}/rename", json={"name": f"{prefix}y"}).status_code == 403
        # a delegated user reads and acts on its granted VM only; every other VM is 404, as if absent
        for url in ("pin", "stats", "xml"):
            assert delegated.get(f"/api/v1/vms/{vm}/{url}").status_code == 200, url
            assert delegated.get(f"/api/v1/vms/{hidden}/{url}").status_code == 404, url
        assert [row["name"] for row in delegated.get("/api/v1/vm-stats").json()] == [vm]
        assert delegated.post(f"/api/v1/vms/{hidden}/backups", json={}).status_code == 404
        assert delegated.post(f"/api/v1/vms/{hidden}/nics", json={"network": "default"}).status_code == 404
        assert delegated.post(f"/api/v1/vms/{vm}/disks", json={"format": "raw", "pool": "default",
                                                               "volume": "x"}).status_code == 403
        r = delegated.post(f"/api/v1/vms/{vm}/nics", json={"network": "default", "config": True})
        assert r.status_code == 200 and not r.json()["live"], r.text
        # existing volumes (another VM's disk: two writers) and host bridges are the admin's to attach
        disk = {"pool": "default", "volume": f"{hidden}-disk0.qcow2"}
        r = operator.post(f"/api/v1/vms/{vm}/disks", json={"format": "qcow2", **disk, "config": True})
        assert r.status_code == 403 and "volume" in r.json()["error"], r.text
        r = operator.post(f"/api/v1/vms/{vm}/nics", json={"bridge": "virbr0", "config": True})
        assert r.status_code == 403 and "bridge" in r.json()["error"], r.text
        # an operator's own backup lands under the data directory; an admin may write elsewhere
        task = ok_task(operator, operator.post(f"/api/v1/vms/{vm}/backups", json={}))
        assert task["result"]["path"].startswith(str(srv.data_dir / "backups"))
        task = ok_task(api, api.post(f"/api/v1/vms/{vm}/backups", json={"destination": outside}))
        assert os.path.isfile(os.path.join(outside, "manifest.json"))
        r = api.post(f"/api/v1/vms/{vm}/backups", json={"destination": outside})
        assert r.status_code == 409 and "not an empty directory" in r.json()["error"]
        # rename: shut-off VMs only; the new name must be free
        r = api.post(f"/api/v1/vms/{vm}/rename", json={"name": f"{prefix}r2"})
        assert r.status_code == 200 and r.json()["old_name"] == vm, r.text
        assert api.post(f"/api/v1/vms/{prefix}r2/rename", json={"name": vm}).status_code == 200
        for c in (operator, viewer, delegated):
            c.close()


def test_nic_live_attach_detach_pin_and_stats(srv: Server, api: httpx.Client, admin_token: str, prefix: str,
                                              micro_image) -> None:
    vm = f"{prefix}nic"
    with deleting(api, vm):
        create_micro(api, vm, nics=[{"source": "default"}])
        wait_console(api, vm, READY)
        r = api.post(f"/api/v1/vms/{vm}/nics", json={"network": "default"})
        assert r.status_code == 200, r.text
        nic = r.json()
        assert nic["live"] and nic["config"] and nic["network"] == "default"
        mac = nic["mac"]
        live = etree.fromstring(api.get(f"/api/v1/vms/{vm}/xml").json()["xml"].encode())
        assert live.find(f"devices/interface/mac[@address='{mac}']") is not None
        deadline = time.monotonic() + 90
        while "eth1" not in console_run(srv, admin_token, vm, "ls /sys/class/net"):
            assert time.monotonic() < deadline, "the guest never saw the hot-plugged NIC"
            time.sleep(1)
        stats = api.get(f"/api/v1/vms/{vm}/stats").json()
        assert stats["name"] == vm and stats["state"] == "running" and len(stats["net"]) == 2
        assert vm in [row["name"] for row in api.get("/api/v1/vm-stats").json()]
        r = api.delete(f"/api/v1/vms/{vm}/nics/{mac}", params={"timeout": 120})
        task = ok_task(api, r)  # succeeds once the guest has let the NIC go
        assert task["kind"] == "vm.nic.detach" and task["result"]["live"]
        for inactive in ("false", "true"):
            root = etree.fromstring(api.get(f"/api/v1/vms/{vm}/xml", params={"inactive": inactive}).json()["xml"]
                                    .encode())
            assert root.find(f"devices/interface/mac[@address='{mac}']") is None
        assert "eth1" not in console_run(srv, admin_token, vm, "ls /sys/class/net")
        r = api.delete(f"/api/v1/vms/{vm}/nics/{mac}")
        task = wait_task(api, r.json()["id"])
        assert task["state"] == "failed" and "not attached" in task["error"]
        # pinning: show, set (live and persistent), show again
        r = api.put(f"/api/v1/vms/{vm}/pin", json={"vcpus": {"0": "0"}, "emulator": "0"})
        assert r.status_code == 200, r.text
        assert r.json()["vcpupin"] == {"0": "0"} and r.json()["emulatorpin"] == "0"
        assert api.get(f"/api/v1/vms/{vm}/pin").json()["vcpupin"] == {"0": "0"}
        r = api.put(f"/api/v1/vms/{vm}/pin", json={"vcpus": {"0": "0-99999999"}})
        assert r.status_code == 422
        r = api.put(f"/api/v1/vms/{vm}/pin", json={"vcpus": {"5": "0"}})
        assert r.status_code == 422 and "no vCPU 5" in r.json()["error"]


def _with_title(xml: str, title: str) -> str:
    root = etree.fromstring(xml.encode())
    el = root.find("title")
    if el is None:
        el = etree.Element("title")
        root.find("uuid").addnext(el)
    el.text = title
    return etree.tostring(root, encoding="unicode")


def test_xml_read_replace_validate_and_refuse(srv: Server, api: httpx.Client, prefix: str, micro_image) -> None:
    vm = f"{prefix}xml"
    with deleting(api, vm):
        create_micro(api, vm, nics=[{"source": "default"}])
        current = api.get(f"/api/v1/vms/{vm}/xml", params={"inactive": True}).json()
        assert current["inactive"] and current["secure"] and "<domain" in current["xml"]
        r = api.put(f"/api/v1/vms/{vm}/xml", json={"xml": _with_title(current["xml"], "replaced over HTTP")})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["changed"] and "+  <title>replaced over HTTP</title>" in out["diff"]
        assert out["running"] and out["applies"] == "next start" and out["summary"]["title"] == "replaced over HTTP"
        assert api.get(f"/api/v1/vms/{vm}").json()["title"] == "replaced over HTTP"
        again = api.put(f"/api/v1/vms/{vm}/xml", json={"xml": api.get(f"/api/v1/vms/{vm}/xml?inactive=true")
                                                        .json()["xml"]}).json()
        assert again["changed"] is False and again["diff"] == ""
        before = api.get(f"/api/v1/vms/{vm}/xml?inactive=true").json()["xml"]

        # libvirt's schema rejects it: 422 naming the element; nothing changes
        bad = before.replace("<interface type='network'>", "<interface type='netwrk'>")
        assert bad != before
        r = api.put(f"/api/v1/vms/{vm}/xml", json={"xml": bad})
        assert r.status_code == 422, r.text
        assert "schema rejects" in r.json()["error"] and "<interface type='netwrk'>" in r.json()["error"]
        r = api.put(f"/api/v1/vms/{vm}/xml", json={"xml": before.replace("<devices>", "<devices><bogus/>")})
        assert r.status_code == 422 and "<bogus>" in r.json()["error"]
        r = api.put(f"/api/v1/vms/{vm}/xml", json={"xml": "<domain><name>"})
        assert r.status_code == 422 and "not well-formed" in r.json()["error"]
        r = api.put(f"/api/v1/vms/{vm}/xml", json={"xml": before.replace(f"<name>{vm}</name>", "<name>other</name>")})
        assert r.status_code == 422 and "rename" in r.json()["hint"]
        # dropping the NIC the running guest uses: 409 saying which and what to do
        root = etree.fromstring(before.encode())
        mac = root.find("devices/interface/mac").get("address")
        for iface in root.findall("devices/interface"):
            iface.getparent().remove(iface)
        r = api.put(f"/api/v1/vms/{vm}/xml", json={"xml": etree.tostring(root, encoding="unicode")})
        assert r.status_code == 409 and mac in r.json()["error"] and "detach" in r.json()["hint"]
        assert api.get(f"/api/v1/vms/{vm}/xml?inactive=true").json()["xml"] == before
        # viewers read (without secrets), only admins replace
        viewer = _user(srv, api, f"{prefix}xv", "viewer")
        shown = viewer.get(f"/api/v1/vms/{vm}/xml")
        assert shown.status_code == 200 and shown.json()["secure"] is False
        assert viewer.put(f"/api/v1/vms/{vm}/xml", json={"xml": before}).status_code == 403
        viewer.close()


@pytest.fixture()
def slow_server() -> Iterator[Server]:
    """A server whose tasks pause 3 s after each journalled step (KVMKIT_TASK_STEP_DELAY)."""
    server = Server("sqlite", env={"KVMKIT_TASK_STEP_DELAY": "3"})
    server.cli("user", "add", "admin", "--role", "admin")
    server.start()
    yield server
    server.cleanup()


def test_a_clone_cancelled_between_steps_makes_nothing(slow_server: Server, prefix: str, conn,
                                                      micro_image) -> None:
    src, new = f"{prefix}cs", f"{prefix}cc"
    with slow_server.client(slow_server.token("admin")) as c:
        create_micro(c, src, start=False, disks=[{"size": "32M", "pool": "default"}], timeout=600)
        before = c.get(f"/api/v1/vms/{src}/xml", params={"inactive": True}).json()["xml"]
        task_id = c.post(f"/api/v1/vms/{src}/clone", json={"name": new, "linked": True}).json()["id"]
        deadline = time.monotonic() + 60
        while not any(s["name"] == "clone" for s in c.get(f"/api/v1/tasks/{task_id}").json()["steps"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert c.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 200  # during the step's 3 s pause
        task = wait_task(c, task_id)
        assert task["state"] == "cancelled", task
        assert c.get(f"/api/v1/vms/{new}").status_code == 404
        assert c.get(f"/api/v1/vms/{src}/snapshots").json() == []  # no linked-clone snapshot either
        assert c.get(f"/api/v1/vms/{src}/xml", params={"inactive": True}).json()["xml"] == before
        pool = conn.storagePoolLookupByName("default")
        pool.refresh(0)
        assert not [v for v in pool.listAllVolumes() if v.name().startswith(new)]


def test_server_killed_during_a_clone_fails_the_task_and_leaves_no_clone(slow_server: Server, prefix: str,
                                                                         conn, micro_image) -> None:
    src, new = f"{prefix}ks", f"{prefix}kc"
    with slow_server.client(slow_server.token("admin")) as c:
        create_micro(c, src, start=False, disks=[{"size": "32M", "pool": "default"}], timeout=600)
        r = c.post(f"/api/v1/vms/{src}/clone", json={"name": new})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        deadline = time.monotonic() + 60
        while not any(s["name"] == "clone" for s in c.get(f"/api/v1/tasks/{task_id}").json()["steps"]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    slow_server.kill()  # inside the step's 3 s pause: the clone has journalled its plan
    restarted = Server(slow_server.db, data_dir=slow_server.data_dir).start()
    try:
        with restarted.client(restarted.token("admin")) as c:
            task = c.get(f"/api/v1/tasks/{task_id}").json()
            assert task["state"] == "failed"
            assert "interrupted: the server stopped while the task was at step 'clone'" in task["error"]
            assert c.get(f"/api/v1/vms/{new}").status_code == 404
            assert c.get(f"/api/v1/vms/{src}").status_code == 200
    finally:
        restarted.stop()
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName(new)
