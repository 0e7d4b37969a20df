"""/api/v1/hosts and ?host= over HTTP, on a server of the test's own (its own inventory) with the test bed's
hosts: inventory changes are for admins; a VM created with ?host=b runs on b; GET /api/v1/vms spans the hosts
and names a dead one (header, ?report=true) while the others list; host up/down states are on the event
stream; placement (dry run and create without ?host=) picks the host with room and says why."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import ADMIN_PASSWORD, wait_task
from tests.api.server import EventReader, Server
from tests.support.serial import SerialLog

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def hserver() -> Iterator[Server]:
    srv = Server("sqlite", env={"PYTHONFAULTHANDLER": "1"})  # a crash prints every thread's stack to its log
    srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    srv.cli("user", "add", "viewer", "--role", "viewer", "--password-stdin", stdin="viewer-pass-123\n")
    srv.cli("user", "add", "op", "--role", "operator", "--password-stdin", stdin="operator-pass-123\n")
    srv.start()
    yield srv
    died = srv.proc is not None and srv.proc.poll() is not None
    text = srv.log_path.read_text(errors="replace") if died and srv.log_path.exists() else ""
    srv.cleanup()
    assert not died, f"the server died ({srv.proc.returncode if srv.proc else '?'}):\n{text[-12000:]}"


@pytest.fixture()
def api(hserver: Server, hosts: Any) -> Iterator[httpx.Client]:
    """The admin's client; the bed hosts are added as a, b, c, and removed from the inventory afterwards."""
    with hserver.client(hserver.token("admin")) as c:
        for h in hosts:
            r = c.post("/api/v1/hosts", json={"name": h.letter, "uri": h.uri})
            assert r.status_code == 201, r.text
        yield c
        for h in hosts:
            h.heal()
        for h in hosts:
            c.delete(f"/api/v1/hosts/{h.letter}", params={"force": True})
        c.post("/api/v1/hosts/local/maintenance", json={"on": False})


def test_inventory_over_http(api: httpx.Client, hserver: Server, hosts: Any) -> None:
    rows = {r["name"]: r for r in api.get("/api/v1/hosts").json()}
    assert list(rows) == ["local", "a", "b", "c"]
    assert all(rows[n]["state"] == "up" and rows[n]["hostname"] == hosts[n].hostname for n in "abc")
    assert rows["c"]["virt_type"] == "qemu" and "offers no KVM guests" in rows["c"]["virt_type_reason"]
    assert api.get("/api/v1/hosts/b").json()["uri"] == hosts["b"].uri
    assert api.get("/api/v1/hosts/zz").status_code == 404
    dup = api.post("/api/v1/hosts", json={"name": "b", "uri": hosts["a"].uri})
    assert dup.status_code == 409 and "in the inventory already" in dup.json()["error"]
    bad = api.post("/api/v1/hosts", json={"name": "x", "uri": "http://nowhere/"})
    assert bad.status_code == 422
    hosts["b"].kill_libvirtd()
    down = api.post("/api/v1/hosts", json={"name": "bb", "uri": hosts["b"].uri.replace("/system", "/session")})
    assert down.status_code == 409 and "--no-check" in down.json()["hint"] and down.json()["code"] == "host_down"
    hosts["b"].start_libvirtd()
    with hserver.client(hserver.token("viewer")) as viewer, hserver.client(hserver.token("op")) as op:
        assert viewer.get("/api/v1/hosts").status_code == 200
        assert viewer.post("/api/v1/placement", json={"vcpus": 1, "memory": "64M"}).status_code == 200
        assert op.post("/api/v1/hosts", json={"name": "x", "uri": hosts["a"].uri}).status_code == 403
        assert op.delete("/api/v1/hosts/a").status_code == 403
        assert op.post("/api/v1/hosts/a/maintenance", json={"on": True}).status_code == 403
        assert op.patch("/api/v1/hosts/a", json={"max_memory": "1G"}).status_code == 403
    assert api.post("/api/v1/hosts/a/maintenance", json={"on": True}).json() == {"name": "a", "maintenance": True}
    assert api.get("/api/v1/hosts/a").json()["state"] == "maintenance"
    lim = api.patch("/api/v1/hosts/a", json={"max_memory": "1G", "cpu_overcommit": 3}).json()
    assert lim == {"name": "a", "max_memory_mib": 1024, "cpu_overcommit": 3.0}
    # ?host= is offered on the routes of what lives on a host, not on the others
    spec = api.get("/api/v1/openapi.json").json()["paths"]
    assert "host" in {p["name"] for p in spec["/api/v1/vms/{name}"]["get"]["parameters"]}
    assert "host" not in {p["name"] for p in spec["/api/v1/users"]["get"].get("parameters", [])}


def test_a_vm_created_with_host_b_runs_on_b(api: httpx.Client, hosts: Any, conn: Any, prefix: str,
                                            workdir: Any) -> None:
    name = f"{prefix}apib"
    log = str(workdir / f"{name}.log")
    r = api.post("/api/v1/vms", params={"host": "b"}, json={"name": name, "micro": True, "memory_mib": 128,
                                                            "serial_log": log, "start": True})
    assert r.status_code == 202, r.text
    task = wait_task(api, r.json()["id"])
    assert task["state"] == "succeeded", task
    assert task["target"] == f"vm:{name}@b"
    SerialLog(log).wait_for("KVMKIT-GUEST-READY", timeout=120)
    assert name in hosts.names_on("b") and name not in hosts.names_on("a")
    assert name not in {d.name() for d in conn.listAllDomains()}
    assert api.get(f"/api/v1/vms/{name}").status_code == 404  # not on the local host
    shown = api.get(f"/api/v1/vms/{name}", params={"host": "b"}).json()
    assert shown["host"] == "b" and shown["state"] == "running"
    listed = api.get("/api/v1/vms", params={"report": True}).json()
    assert (name, "b") in {(v["name"], v["host"]) for v in listed["vms"]}
    assert [h["state"] for h in listed["hosts"]] == ["up"] * 4
    only_b = api.get("/api/v1/vms", params={"host": "b"}).json()
    assert [v["name"] for v in only_b if v["name"].startswith(prefix)] == [name]
    act = api.post(f"/api/v1/vms/{name}/actions/destroy", params={"host": "b"})
    assert wait_task(api, act.json()["id"])["state"] == "succeeded"
    assert not hosts.conn("b").lookupByName(name).isActive()
    assert api.get("/api/v1/vms", params={"host": "zz"}).status_code == 404
    # a host with VMs is not removed unless forced
    res = api.delete("/api/v1/hosts/b")
    assert res.status_code == 409 and name in res.json()["error"]


def test_dead_hosts_are_reported_and_their_state_streamed(api: httpx.Client, hserver: Server, hosts: Any,
                                                          prefix: str) -> None:
    hosts.guest("a", "alive", start=False)
    assert api.get("/api/v1/vms", params={"report": True}).status_code == 200  # all up, lists cached
    events = EventReader(hserver, hserver.token("admin"))
    try:
        hosts["b"].kill_libvirtd()
        hosts["c"].link_down()
        events.wait(timeout=120, kind="host", host="b", state="down")
        r = api.get("/api/v1/vms", params={"report": True, "host_timeout": 3})
        assert r.status_code == 200
        body = r.json()
        assert (f"{prefix}alive", "a") in {(v["name"], v["host"]) for v in body["vms"]}
        states = {h["name"]: h for h in body["hosts"]}
        assert states["local"]["state"] == "up" and states["a"]["state"] == "up"
        assert states["b"]["state"] == "down" and states["b"]["error"]
        assert states["c"]["state"] in ("timeout", "down", "up")  # up: c's list was fresh (served from cache)
        assert "b=down" in r.headers["x-kvmkit-unreachable-hosts"]
        plain = api.get("/api/v1/vms", params={"host_timeout": 3})
        assert isinstance(plain.json(), list) and "b=down" in plain.headers["x-kvmkit-unreachable-hosts"]
        events.wait(timeout=120, kind="host", host="c", state="down")  # keepalive noticed the silent host
        hosts["b"].start_libvirtd()
        hosts["c"].link_up()
        events.wait(timeout=120, kind="host", host="b", state="up")
        events.wait(timeout=180, kind="host", host="c", state="up")
    finally:
        events.close()


def test_placement_dry_run_and_create_without_a_host(api: httpx.Client, hosts: Any, prefix: str,
                                                     workdir: Any) -> None:
    assert api.post("/api/v1/hosts/local/maintenance", json={"on": True}).status_code == 200
    assert api.post("/api/v1/hosts/c/maintenance", json={"on": True}).status_code == 200
    assert api.patch("/api/v1/hosts/a", json={"max_memory": "300M"}).status_code == 200
    hosts.guest("a", "big", memory_mib=256)
    plan = api.post("/api/v1/placement", json={"vcpus": 1, "memory": "128M"}).json()
    assert plan["chosen"] == "b" and plan["reason"].startswith("host b:")
    why = {c["name"]: c["reason"] for c in plan["candidates"]}
    assert "maintenance" in why["local"] and "maintenance" in why["c"] and "not enough memory" in why["a"]
    name = f"{prefix}placed"
    r = api.post("/api/v1/vms", json={"name": name, "micro": True, "memory_mib": 128,
                                      "serial_log": str(workdir / "placed.log")})
    task = wait_task(api, r.json()["id"])
    assert task["state"] == "succeeded", task
    assert task["result"]["host"] == "b" and task["result"]["placement"]["chosen"] == "b"
    assert name in hosts.names_on("b")
    assert api.post("/api/v1/placement", json={"vcpus": 1, "memory": "64G"}).json()["chosen"] is None
    r = api.post("/api/v1/vms", json={"name": f"{prefix}huge", "micro": True, "memory_mib": "64G"})
    assert r.status_code == 409 and "no host can take VM" in r.json()["error"]
