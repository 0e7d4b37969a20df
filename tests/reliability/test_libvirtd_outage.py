"""libvirtd gone or stuck while the server runs: requests answer 503 with a hint (never a 500, never a hang),
a task whose libvirt call falls into the outage fails naming libvirtd, and after libvirtd is back the server
reconnects by itself (with back-off), the event stream resumes and running guests are still there.

test_libvirtd_restart_while_operations_run stops the SHARED libvirtd for a few seconds (the way
tests/api/test_events_reconnect.py restarts it): other tests running at that moment may see errors.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import wait_task
from tests.api.server import KVMKIT, EventReader, Server
from tests.support import libvirtd

pytestmark = pytest.mark.guest
NO_HANG_S = 60  # a request that takes longer than this counts as a hang
STEP_DELAY_S = 12  # the suspend task waits this long after its first step: libvirtd is down by then


class SilentDaemon:
    """A unix socket that accepts connections and never answers: a stuck libvirtd."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                self.held.append(self.sock.accept()[0])

    def close(self) -> None:
        for s in [*self.held, self.sock]:
            s.close()


class UnreadyServer(Server):
    """``kvmkit serve`` that counts as started once /healthz answers (its libvirt never becomes ready)."""

    def start(self, timeout: float = 60) -> Server:
        from tests.api.server import free_port

        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process keeps it
        self.proc = subprocess.Popen([KVMKIT, "--connect", self.uri, "serve", "--listen", f"127.0.0.1:{self.port}",
                                      "--db", self.db, "--log-level", "warning"], env=self.env, stdout=log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        raise RuntimeError(f"server not answering after {timeout} s:\n{self.log()}")


def _is_503_with_hint(r: httpx.Response) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == "host" and "libvirtd" in f"{body['error']} {body['hint']}", body
    assert int(r.headers["retry-after"]) >= 1


def test_stuck_libvirtd_gets_503_with_a_hint_not_a_hang(workdir) -> None:
    daemon = SilentDaemon(workdir / "silent.sock")
    srv = UnreadyServer("sqlite", uri=f"qemu+unix:///system?socket={daemon.path}")
    try:
        srv.cli("user", "add", "admin", "--role", "admin")
        srv.start()
        token = srv.token("admin")
        calls = [("GET", "/api/v1/vms"), ("GET", "/api/v1/vms/x"), ("POST", "/api/v1/vms/x/actions/start"),
                 ("GET", "/api/v1/vms/x/snapshots"), ("GET", "/api/v1/pools")] * 2
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {token}"}, timeout=NO_HANG_S) as c:
            with ThreadPoolExecutor(len(calls)) as pool:
                answers = list(pool.map(lambda m: c.request(*m), calls))  # a hang fails as a read timeout
            for r in answers:
                _is_503_with_hint(r)
            ready = c.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["libvirt"] != "ok", ready.text
            assert c.get("/healthz").status_code == 200
    finally:
        srv.cleanup()
        daemon.close()


@pytest.fixture()
def slow_server() -> Iterator[Server]:
    srv = Server("sqlite", env={"KVMKIT_TASK_STEP_DELAY": str(STEP_DELAY_S)})
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    yield srv
    srv.cleanup()


def test_libvirtd_restart_while_operations_run(slow_server: Server, micro_guest) -> None:
    if libvirtd.under_systemd():
        pytest.fail("libvirtd runs under systemd here: this test stops it with SIGTERM and `libvirtd -d`")
    guest = micro_guest("stays")
    token = slow_server.token("admin")
    events = EventReader(slow_server, token)
    c = slow_server.client(token)  # 120 s read timeout: a hang fails the test
    try:
        events.wait(kind="hello", connected=True, timeout=30)
        r = c.post(f"/api/v1/vms/{guest.name}/actions/suspend")  # journalled, then it waits before acting
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        try:
            libvirtd.stop()
            gone = events.events.index(events.wait(kind="host", event="disconnected", timeout=60))
            for method, path in [("GET", f"/api/v1/vms/{guest.name}"), ("GET", "/api/v1/vms"),
                                 ("GET", f"/api/v1/vms/{guest.name}/snapshots"), ("GET", "/api/v1/pools")]:
                _is_503_with_hint(c.request(method, path))
            _is_503_with_hint(c.post("/api/v1/vms", json={"name": f"{guest.name}-new", "micro": True}))
            # the VM the suspend task holds answers 409 first: one operation per VM, libvirtd or not
            assert c.post(f"/api/v1/vms/{guest.name}/actions/resume").json()["task_id"] == task_id
            assert c.get("/readyz").status_code == 503
            task = wait_task(c, task_id, timeout=120)  # its call came during the outage
            assert task["state"] == "failed" and "libvirtd" in task["error"], task
        finally:
            libvirtd.start()
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:  # requests reconnect after the back-off
            assert time.monotonic() < deadline, c.get("/readyz").text
            time.sleep(0.2)
        while not any(e["kind"] == "host" and e["event"] == "connected" for e in events.events[gone:]):
            assert time.monotonic() < deadline, events.events[-5:]  # the event connection is back
            time.sleep(0.2)
        row = next(v for v in c.get("/api/v1/vms").json() if v["name"] == guest.name)
        assert row["state"] == "running", row  # QEMU outlived libvirtd
        r = c.post(f"/api/v1/vms/{guest.name}/actions/suspend")
        assert wait_task(c, r.json()["id"])["state"] == "succeeded"
        events.wait(kind="vm", vm=guest.name, event="suspended", timeout=60)  # the event stream resumed
    finally:
        c.close()
        events.close()
