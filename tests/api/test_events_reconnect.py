"""The server's event connection survives a libvirtd restart: it reconnects and events resume.

This test restarts the shared libvirtd once (running guests keep running: QEMU outlives libvirtd), the
way scripts/setup.sh starts it when systemd does not manage it.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.api.server import EventReader, Server
from tests.support import libvirtd

pytestmark = pytest.mark.guest


def test_events_resume_after_libvirtd_restart(micro_guest, micro_image) -> None:
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    events = EventReader(srv, srv.token("admin"))
    try:
        events.wait(kind="hello", connected=True, timeout=60)  # the event connection is up
        libvirtd.restart()  # the tests' shared connection (tests/conftest.py live_conn) reopens itself
        events.wait(kind="host", event="disconnected", timeout=60)
        deadline = time.monotonic() + 60
        while not any(e["kind"] == "host" and e["event"] == "connected" for e in events.events):
            assert time.monotonic() < deadline, events.events[-5:]
            time.sleep(0.2)
        assert httpx.get(f"{srv.url}/readyz", timeout=10).status_code == 200  # requests reconnect too
        guest = micro_guest("after")  # defined and started through a fresh connection
        events.wait(kind="vm", vm=guest.name, event="started", timeout=60)
        with srv.client(srv.token("admin")) as c:
            assert guest.name in [v["name"] for v in c.get("/api/v1/vms").json()]
    finally:
        events.close()
        srv.cleanup()
