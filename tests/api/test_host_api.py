"""The host through the API: info, check and plan read; a tuning profile applied and rolled back (real sysctl
and sysfs values change and come back), KSM and IO scheduler changes (restored), huge pages; viewers read and
only admins change; a server whose libvirt is not this machine changes nothing here (409).

Host settings are saved and restored by the fixtures of tests/host/conftest.py (imported below)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from kvmkit.host import ksm, sysfs
from tests.api.server import Server
from tests.host.conftest import hugepages_saved, ksm_saved, loop_device, snapshot, tunables_saved

__all__ = ["hugepages_saved", "ksm_saved", "loop_device", "tunables_saved"]  # fixtures used by this module


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    server = Server("sqlite")
    server.cli("user", "add", "admin", "--role", "admin")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture()
def api(srv: Server) -> Iterator[httpx.Client]:
    with srv.client(srv.token("admin")) as client:
        yield client


def _client(srv: Server, api: httpx.Client, name: str, role: str) -> httpx.Client:
    assert api.post("/api/v1/users", json={"name": name, "role": role, "password": "pass-" + name}).status_code == 201
    return srv.client(api.post("/api/v1/tokens", json={"name": "t", "user": name}).json()["token"])


@pytest.mark.guest
def test_info_check_and_plan(srv: Server, api: httpx.Client, prefix: str) -> None:
    info = api.get("/api/v1/host/info").json()
    assert info["source"] == "host" and info["cpus"] >= 1 and info["nodes"] and info["memory"]["total_mib"] > 0
    assert info["ksm"]["available"] is True and info["ksm"]["run"] == sysfs.read_int(sysfs.KSM_DIR / "run")
    assert {s["device"] for s in info["io_schedulers"]} == set(sysfs.listdir(sysfs.BLOCK_DIR))
    assert info["thp"]["enabled"] in info["thp"]["enabled_options"] and isinstance(info["vms"], list)
    check = api.get("/api/v1/host/check").json()
    assert check["uri"] == "qemu:///system" and {c["name"] for c in check["checks"]} >= {"libvirtd", "qemu"}
    assert check["ready"] is all(c["status"] != "fail" for c in check["checks"])

    plan = api.post("/api/v1/host/plan", json={"vms": ["db=2c:1G", {"name": "web", "vcpus": 1, "memory": 512}],
                                               "topology": {"sockets": 2, "cores_per_socket": 4, "memory": "16G"}})
    assert plan.status_code == 200, plan.text
    body = plan.json()
    assert body["topology"]["source"] == "request" and body["fits"] is True
    assert [(v["name"], v["vcpus"], v["memory_mib"]) for v in body["vms"]] == [("db", 2, 1024), ("web", 1, 512)]
    assert all(v["fits_one_node"] and "<numatune>" in v["xml"] for v in body["vms"])
    assert api.post("/api/v1/host/plan", json={"vms": [f"x=1c:{info['memory']['total_mib']}M"]}).status_code == 200
    r = api.post("/api/v1/host/plan", json={"vms": ["4cores"]})
    assert r.status_code == 422 and "bad --vm" in r.json()["error"]
    assert api.post("/api/v1/host/plan", json={"vms": ["99999c:1G"]}).status_code == 422
    assert api.post("/api/v1/host/plan", json={"vms": []}).status_code == 422

    viewer = _client(srv, api, f"{prefix}hv", "viewer")
    operator = _client(srv, api, f"{prefix}ho", "operator")
    for c in (viewer, operator):
        assert c.get("/api/v1/host/info").status_code == 200
        assert c.get("/api/v1/host/ksm").status_code == 200
        assert c.patch("/api/v1/host/ksm", json={"pages_to_scan": 100}).status_code == 403
        assert c.post("/api/v1/host/profiles/virtual-host/apply", json={}).status_code == 403
        assert c.post("/api/v1/host/profiles/rollback").status_code == 403
        assert c.put("/api/v1/host/hugepages", json={"count": 0}).status_code == 403
        assert c.put("/api/v1/host/iosched/vda", json={"scheduler": "none"}).status_code == 403
        assert c.post("/api/v1/host/prepare").status_code == 403
        assert c.get("/api/v1/host/check", params={"refresh": True}).status_code == 403
        c.close()


@pytest.mark.guest
def test_profile_apply_and_rollback_restore_every_value(api: httpx.Client, tunables_saved) -> None:
    before = tunables_saved
    names = {p["name"] for p in api.get("/api/v1/host/profiles").json()}
    assert {"virtual-host", "virtual-guest", "throughput-performance"} <= names
    shown = api.get("/api/v1/host/profiles/virtual-host").json()
    wanted = {s["path"]: s["value"] for s in shown["settings"] if s["current"] is not None}
    assert "built-in:virtual-host" in shown["sources"] and wanted
    try:
        r = api.post("/api/v1/host/profiles/virtual-host/apply", json={})
        assert r.status_code == 200, r.text
        applied = r.json()
        assert applied["profile"] == "virtual-host" and applied["method"] == "direct"
        for path, value in wanted.items():  # the host really has the profile's values now
            assert sysfs.current(path) == value, path
        assert {c["path"] for c in applied["changed"]} == set(wanted)
        assert [p["applied"] for p in api.get("/api/v1/host/profiles").json() if p["name"] == "virtual-host"] == [True]
        r = api.post("/api/v1/host/profiles/virtual-guest/apply", json={})
        assert r.status_code == 409 and "applied already" in r.json()["error"]
        r = api.post("/api/v1/host/profiles/rollback")
        assert r.status_code == 200, r.text
        assert r.json()["profile"] == "virtual-host"
    finally:
        api.post("/api/v1/host/profiles/rollback")  # whatever happened above: the server's record goes too
    assert snapshot() == before
    r = api.post("/api/v1/host/profiles/rollback")
    assert r.status_code == 404 and "no kvmkit tuning profile is applied" in r.json()["error"]
    assert api.get("/api/v1/host/profiles/no-such-profile").status_code == 404
    assert api.post("/api/v1/host/profiles/..%2Fetc/apply", json={}).status_code in (404, 422)


@pytest.mark.guest
def test_ksm_iosched_and_hugepages_changes(api: httpx.Client, ksm_saved, loop_device, hugepages_saved) -> None:
    scan = ksm_saved["pages_to_scan"]
    r = api.patch("/api/v1/host/ksm", json={"pages_to_scan": scan + 1})
    assert r.status_code == 200, r.text
    assert r.json()["pages_to_scan"] == scan + 1 == ksm.settings()["pages_to_scan"]
    assert r.json()["changed"] == [{"path": str(sysfs.KSM_DIR / "pages_to_scan"), "before": str(scan),
                                    "after": str(scan + 1)}]
    assert api.get("/api/v1/host/ksm").json()["pages_to_scan"] == scan + 1
    assert api.patch("/api/v1/host/ksm", json={"pages_to_scan": scan}).json()["pages_to_scan"] == scan
    assert api.patch("/api/v1/host/ksm", json={}).status_code == 422
    assert api.patch("/api/v1/host/ksm", json={"sleep_ms": -1}).status_code == 422
    assert api.patch("/api/v1/host/ksm", json={"action": "explode"}).status_code == 422

    dev = api.get(f"/api/v1/host/iosched/{loop_device}").json()
    assert dev["device"] == loop_device and dev["scheduler"] in dev["available"]
    other = next((s for s in dev["available"] if s != dev["scheduler"]), dev["scheduler"])
    try:
        r = api.put(f"/api/v1/host/iosched/{loop_device}", json={"scheduler": other})
        assert r.status_code == 200 and r.json()["scheduler"] == other and r.json()["previous"] == dev["scheduler"]
        assert sysfs.read_choice(sysfs.BLOCK_DIR / loop_device / "queue" / "scheduler")[0] == other
        r = api.put(f"/api/v1/host/iosched/{loop_device}", json={"scheduler": "bogus"})
        assert r.status_code == 422 and all(s in r.json()["hint"] for s in dev["available"])
    finally:
        api.put(f"/api/v1/host/iosched/{loop_device}", json={"scheduler": dev["scheduler"]})
    assert api.get("/api/v1/host/iosched/nosuchdisk").status_code == 404
    assert api.get("/api/v1/host/iosched/..").status_code in (404, 422)

    pools = api.get("/api/v1/host/hugepages").json()["pools"]
    two_mb = next(p for p in pools if p["size"] == "2M")
    assert two_mb["total"] == hugepages_saved
    r = api.put("/api/v1/host/hugepages", json={"count": hugepages_saved, "size": "2M"})
    assert r.status_code == 200 and r.json()["allocated"] == hugepages_saved and r.json()["runtime"] is True
    r = api.put("/api/v1/host/hugepages", json={"count": 4, "size": "1G"})
    assert r.status_code == 200 and r.json()["runtime"] is False and "hugepages=4" in r.json()["kernel_cmdline"]
    r = api.put("/api/v1/host/hugepages", json={"count": 1 << 29})
    assert r.status_code == 422 and "more than this host's memory" in r.json()["error"]
    assert sysfs.read_int(sysfs.HUGEPAGES_DIR / "hugepages-2048kB" / "nr_hugepages") == hugepages_saved


@pytest.mark.fast
def test_a_server_on_another_libvirt_changes_nothing_here() -> None:
    server = Server("sqlite", uri="test:///default")
    server.cli("user", "add", "admin", "--role", "admin")
    server.start()
    try:
        before = ksm.settings()
        with server.client(server.token("admin")) as c:
            r = c.patch("/api/v1/host/ksm", json={"action": "enable"})
            assert r.status_code == 409 and "test:///default" in r.json()["error"]
            for method, url, body in (("PUT", "/api/v1/host/hugepages", {"count": 1}),
                                      ("PUT", "/api/v1/host/iosched/vda", {"scheduler": "none"}),
                                      ("POST", "/api/v1/host/profiles/virtual-host/apply", {}),
                                      ("POST", "/api/v1/host/profiles/rollback", None)):
                assert c.request(method, url, json=body).status_code == 409, url
            info = c.get("/api/v1/host/info").json()
            assert info["source"] == "libvirt:test:///default" and "local host only" in info["note"]
        assert ksm.settings() == before
    finally:
        server.cleanup()


@pytest.mark.guest
def test_repair_clears_stale_records_over_http(srv: Server, api: httpx.Client, prefix: str, conn, workdir,
                                                micro_image, virt_type) -> None:
    """POST /api/v1/host/repair: a dry run names the stale records and changes nothing; the real run clears
    them (the files boot again); viewers may not."""
    from tests.support.boot_files import leak_records, private_boot_files, records

    boot = private_boot_files(micro_image, workdir / "boot")
    leak_records(conn, f"{prefix}leak", boot, workdir, virt_type)
    viewer = _client(srv, api, f"{prefix}view", "viewer")
    assert viewer.post("/api/v1/host/repair", json={"paths": [str(workdir)]}).status_code == 403
    viewer.close()
    r = api.post("/api/v1/host/repair", json={"dry_run": True, "paths": [str(workdir)]})
    assert r.status_code == 200, r.text
    would = {c["path"] for c in r.json()["cleared"]}
    assert would == set(boot.paths()) and all(records(p) for p in boot.paths())
    r = api.post("/api/v1/host/repair", json={"paths": [str(workdir)]})
    assert r.status_code == 200 and not r.json()["dry_run"], r.text
    assert {c["path"] for c in r.json()["cleared"]} == would
    assert not any(records(p) for p in boot.paths())
    r = api.post("/api/v1/host/repair", json={"paths": [str(workdir / "nope")]})
    assert r.status_code == 404, r.text
