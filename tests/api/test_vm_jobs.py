"""VM create tasks (kvmkit.api.jobs.vms): ten creates at once through the API get ten distinct MACs and all
boot, with a journal that tells progress; a create whose start fails leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import libvirt
import pytest
from lxml import etree

from tests.api.conftest import wait_task
from tests.api.server import Server
from tests.support.serial import SerialLog

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def sqlite_admin() -> Iterator[httpx.Client]:
    """One SQLite-backed server for this module (the create path is the same on PostgreSQL)."""
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    try:
        with srv.client(srv.token("admin")) as client:
            yield client
    finally:
        srv.cleanup()


def test_ten_concurrent_creates_get_distinct_macs_and_all_boot(sqlite_admin: httpx.Client, prefix: str, conn,
                                                               workdir, micro_image) -> None:
    names = [f"{prefix}t{i}" for i in range(10)]
    logs = {n: SerialLog(workdir / f"{n}.serial.log") for n in names}

    def post(name: str) -> str:
        r = sqlite_admin.post("/api/v1/vms", json={
            "name": name, "micro": True, "memory_mib": 128, "start": True, "nics": [{"source": "default"}],
            "serial_log": str(logs[name].path)})
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    with ThreadPoolExecutor(10) as pool:
        task_ids = list(pool.map(post, names))
    tasks = [wait_task(sqlite_admin, t) for t in task_ids]
    for task in tasks:
        assert task["state"] == "succeeded", task["error"]
        assert task["percent"] == 100 and task["result"]["state"] == "running"
        steps = [s["name"] for s in task["steps"]]
        assert steps[0] == "create" and steps.index("defined") < steps.index("start"), steps
    macs = {}
    for name in names:
        dom = conn.lookupByName(name)
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        root = etree.fromstring(dom.XMLDesc(0).encode())
        macs[name] = root.find("devices/interface/mac").get("address")
    assert len(set(macs.values())) == 10, macs
    assert {t["result"]["macs"][0] for t in tasks} == set(macs.values())
    for name in names:
        logs[name].wait_for("KVMKIT-GUEST-READY", timeout=180)  # ten TCG boots share two cores


def test_start_failure_leaves_nothing_and_the_task_says_why(sqlite_admin: httpx.Client, prefix: str,
                                                            conn) -> None:
    net = etree.Element("network")
    etree.SubElement(net, "name").text = f"{prefix}down"
    conn.networkDefineXML(etree.tostring(net, encoding="unicode"))  # defined, never started
    name = f"{prefix}roll"
    r = sqlite_admin.post("/api/v1/vms", json={"name": name, "micro": True, "memory_mib": 128, "start": True,
                                               "nics": [{"source": f"{prefix}down"}]})
    assert r.status_code == 202, r.text
    task = wait_task(sqlite_admin, r.json()["id"])
    assert task["state"] == "failed"
    assert "starting VM" in task["error"] and f"{prefix}down" in task["error"]
    steps = [s["name"] for s in task["steps"]]
    assert "defined" in steps and steps[-1] == "start"  # the journal says how far it got
    assert name not in {d.name() for d in conn.listAllDomains()}
    assert sqlite_admin.get(f"/api/v1/vms/{name}").status_code == 404
