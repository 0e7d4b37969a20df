"""Metrics over HTTP against a real ``kvmkit serve`` on qemu:///system with a running micro-guest that has a
disk: ``/metrics`` parsed with prometheus_client's parser (the libvirt-exporter series of the VM with ``host``
and ``domain`` labels), scraped once by a real Prometheus (Debian's package) whose query API then returns
the VM's series, and the history for charts (a server sampling every second) with at least two points."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvmkit.images import qemu_img
from tests.api.server import Server, free_port

pytestmark = pytest.mark.guest
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@pytest.fixture(scope="module")
def msrv() -> Iterator[Server]:
    """A server that samples the history every second (KVMKIT_METRICS_INTERVAL=1), with user 'admin'."""
    srv = Server("sqlite", env={"KVMKIT_METRICS_INTERVAL": "1"})
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def madmin(msrv: Server) -> Iterator[httpx.Client]:
    with msrv.client(msrv.token("admin")) as c:
        yield c


@pytest.fixture()
def guest(micro_guest, workdir):
    """A running micro-guest with a small qcow2 disk (vda)."""
    disk = workdir / "disk.qcow2"
    qemu_img.create(disk, "qcow2", 16 * 1024**2)
    disk.chmod(0o666)
    g = micro_guest("met", disks=[{"path": str(disk), "format": "qcow2"}])
    g.log.wait_for("KVMKIT-GUEST-READY", timeout=180)
    return g


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def of_vm(found: dict[str, list[tuple[dict[str, str], float]]], name: str, vm: str,
          **labels: str) -> list[tuple[dict[str, str], float]]:
    return [(lab, v) for lab, v in found.get(name, []) if lab.get("domain") == vm and labels.items() <= lab.items()]


def test_metrics_scrape_has_the_vm_series_and_needs_a_token(msrv: Server, madmin: httpx.Client, guest,
                                                            make_user_m) -> None:
    r = madmin.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = parse(r.text)
    (labels, cpu), = of_vm(found, "libvirt_domain_info_cpu_time_seconds_total", guest.name)
    assert cpu > 0 and labels["host"] and set(labels) == {"host", "domain"}
    host = labels["host"]
    assert of_vm(found, "libvirt_domain_info_memory_usage_bytes", guest.name)[0][1] == 256 * 1024**2
    assert of_vm(found, "libvirt_domain_info_maximum_memory_bytes", guest.name)[0][1] == 256 * 1024**2
    assert of_vm(found, "libvirt_domain_info_virtual_cpus", guest.name)[0][1] == 1
    (blabels, read), = of_vm(found, "libvirt_domain_block_stats_read_bytes_total", guest.name, target_device="vda")
    assert read > 0 and blabels["host"] == host  # the guest kernel read the disk's partition table
    assert of_vm(found, "libvirt_domain_block_stats_read_requests_total", guest.name, target_device="vda")[0][1] > 0
    assert of_vm(found, "libvirt_domain_block_stats_write_bytes_total", guest.name, target_device="vda")
    assert of_vm(found, "libvirt_domain_memory_stats_actual_balloon_bytes", guest.name)[0][1] == 256 * 1024**2
    assert ({"host": host}, 1.0) in found["libvirt_up"]
    assert next(v for lab, v in found["kvmkit_vms"] if lab == {"host": host, "state": "running"}) >= 1
    assert next(v for lab, v in found["kvmkit_host_memory_total_bytes"] if lab == {"host": host}) > 0
    assert {lab["mode"] for lab, _ in found["kvmkit_host_cpu_seconds_total"]} >= {"user", "system", "idle"}
    assert "kvmkit_host_ksm_saved_bytes" in found and "kvmkit_host_hugepages_free" in found

    # request counts by route template, never by raw path (bounded cardinality)
    madmin.get(f"/api/v1/vms/{guest.name}/metrics")
    madmin.get("/api/v1/no-such-route")
    found = parse(madmin.get("/metrics").text)
    routes = {(lab["method"], lab["route"], lab["status"]) for lab, _ in found["kvmkit_api_requests_total"]}
    assert ("GET", "/api/v1/vms/{name}/metrics", "200") in routes and ("GET", "/metrics", "200") in routes
    assert ("GET", "unmatched", "404") in routes
    assert not [r for r in routes if guest.name in r[1]]

    # a token is needed; any role may scrape, a delegated user may not (it covers every VM)
    assert msrv.client().get("/metrics").status_code == 401
    _, viewer = make_user_m("viewer", "viewer")
    assert viewer.get("/metrics").status_code == 200
    _, delegated = make_user_m("deleg", "operator", vm_scope="granted")
    r = delegated.get("/metrics")
    assert r.status_code == 403 and r.json()["hint"]


@pytest.fixture()
def make_user_m(msrv: Server, madmin: httpx.Client, prefix: str):
    """Users of the metrics server, named with the test's prefix."""
    clients: list[httpx.Client] = []

    def make(suffix: str, role: str, **extra: Any) -> tuple[str, httpx.Client]:
        name = f"{prefix}{suffix}"
        r = madmin.post("/api/v1/users", json={"name": name, "role": role, "password": "pass-" + name, **extra})
        assert r.status_code == 201, r.text
        tok = madmin.post("/api/v1/tokens", json={"name": "t", "user": name}).json()["token"]
        c = msrv.client(tok)
        clients.append(c)
        return name, c

    yield make
    for c in clients:
        c.close()


def wait_points(client: httpx.Client, path: str, count: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(path, params={"since": "10m"})
        assert r.status_code == 200, r.text
        got = r.json()
        cpu = next(s for s in got["series"] if s["name"] == "cpu_percent")["values"]
        if len([v for v in cpu if v is not None]) >= count:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path}: fewer than {count} points after {timeout} s: {got}")
        time.sleep(0.5)


def test_history_series_for_the_vm_and_the_host(msrv: Server, madmin: httpx.Client, guest, make_user_m) -> None:
    got = wait_points(madmin, f"/api/v1/vms/{guest.name}/metrics", 2)
    assert got["kind"] == "vm" and got["name"] == guest.name and got["resolution"] == 1
    values = {s["name"]: s["values"] for s in got["series"]}
    assert len(got["timestamps"]) == len(values["cpu_percent"]) >= 2
    assert got["timestamps"] == sorted(got["timestamps"])
    assert all(0 <= v <= 100 for v in values["cpu_percent"] if v is not None)
    assert [v for v in values["memory_total_bytes"] if v is not None][-1] == 256 * 1024**2
    assert [v for v in values["memory_used_bytes"] if v is not None][-1] > 0
    assert all(v is not None and v >= 0 for v in values["disk_read_bytes_per_second"])

    host = wait_points(madmin, "/api/v1/host/metrics", 2)
    hv = {s["name"]: s["values"] for s in host["series"]}
    assert host["kind"] == "host" and [v for v in hv["vms_running"] if v is not None][-1] >= 1
    assert [v for v in hv["memory_total_bytes"] if v is not None][-1] > 0

    # the CLI reads the same history through the same service function
    cli = msrv.cli("vm", "metrics", guest.name, "--since", "10m")
    assert [s["name"] for s in cli["series"]] == [s["name"] for s in got["series"]]
    assert set(got["timestamps"]) <= set(cli["timestamps"]) and cli["resolution"] == 1
    assert msrv.cli("host", "metrics", "--since", "10m")["name"] == host["name"]

    coarse = madmin.get(f"/api/v1/vms/{guest.name}/metrics", params={"since": "10m", "step": "1m"}).json()
    assert coarse["step"] == 60 and all(t % 60 == 0 for t in coarse["timestamps"])
    r = madmin.get(f"/api/v1/vms/{guest.name}/metrics", params={"since": "soon"})
    assert r.status_code == 422 and "since" in r.json()["error"] and r.json()["hint"]
    assert madmin.get("/api/v1/vms/kt-no-such-vm/metrics").status_code == 404

    # delegated users: their own VMs' history only, not the host's
    name, delegated = make_user_m("own", "viewer", vm_scope="granted")
    assert madmin.post(f"/api/v1/users/{name}/grants", json={"vm": guest.name}).status_code in (200, 201)
    assert delegated.get(f"/api/v1/vms/{guest.name}/metrics").status_code == 200
    assert delegated.get("/api/v1/vms/kt-other/metrics").status_code == 404
    assert delegated.get("/api/v1/host/metrics").status_code == 403


class Prometheus:
    """Debian's prometheus on a free loopback port scraping kvmkit every second; its data dir is removed."""

    def __init__(self, workdir: Path, target: Server, token: str) -> None:
        self.dir = workdir / "prometheus"
        self.dir.mkdir()
        token_file = self.dir / "token"
        token_file.write_text(token)
        token_file.chmod(0o600)
        self.port = free_port()
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: kvmkit\n"
            "    metrics_path: /metrics\n"
            "    authorization:\n"
            "      type: Bearer\n"
            f"      credentials_file: {token_file}\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target.port}']\n")
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(self.dir)})
        self.url = f"http://127.0.0.1:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_a_real_prometheus_scrapes_the_vm_series(msrv: Server, guest, workdir: Path) -> None:
    assert os.access(PROMETHEUS, os.X_OK), "Debian's prometheus is not installed (scripts/packages.txt)"
    prom = Prometheus(workdir, msrv, msrv.token("admin"))
    try:
        promql = f'libvirt_domain_info_cpu_time_seconds_total{{domain="{guest.name}"}}'
        deadline = time.monotonic() + 180
        result: list[dict[str, Any]] = []
        while not result:
            if prom.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {(prom.dir / 'prometheus.log').read_text()[-2000:]}")
            try:
                result = prom.query(promql)
            except httpx.HTTPError:
                pass  # not listening yet
            if not result:
                if time.monotonic() > deadline:
                    targets = httpx.get(f"{prom.url}/api/v1/targets", timeout=10).text[-2000:]
                    raise TimeoutError(f"Prometheus has no {promql} after 180 s; targets: {targets}")
                time.sleep(0.5)
        (series,) = result
        assert series["metric"]["domain"] == guest.name and series["metric"]["job"] == "kvmkit"
        assert series["metric"]["host"] and float(series["value"][1]) > 0
        assert prom.query('up{job="kvmkit"}')  # Prometheus' own series for the target
    finally:
        prom.stop()
    assert not prom.dir.exists()
