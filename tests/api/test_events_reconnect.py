"""The server's event connection survives a libvirtd restart: it reconnects and events resume.

This test restarts the shared libvirtd once (running guests keep running: QEMU outlives libvirtd), the
way scripts/setup.sh starts it when systemd does not manage it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import libvirt
import pytest

from kvmkit.hypervisor.connection import wait_for
from tests.api.server import EventReader, Server

pytestmark = pytest.mark.guest


def _libvirtd_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "libvirtd":
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def _restart_libvirtd() -> None:
    if subprocess.run(["systemctl", "is-active", "--quiet", "libvirtd"], check=False,
                      capture_output=True).returncode == 0:
        subprocess.run(["systemctl", "restart", "libvirtd"], check=True, timeout=120)
    else:
        pids = _libvirtd_pids()
        assert pids, "libvirtd is not running"
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while _libvirtd_pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _libvirtd_pids():  # did not stop in a minute
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["libvirtd", "-d"], check=True, timeout=60)


def _revive(conn: libvirt.virConnect) -> None:
    """Point the session's connection object (closed by the restart) at a fresh connection, so later tests
    and the prefix sweep keep working: swap the C handles; the old, dead one is closed with ``fresh``."""
    fresh = wait_for("qemu:///system", timeout=60)
    conn._o, fresh._o = fresh._o, conn._o  # type: ignore[attr-defined]
    with contextlib.suppress(libvirt.libvirtError):
        fresh.close()


def test_events_resume_after_libvirtd_restart(conn, micro_guest, micro_image) -> None:
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    events = EventReader(srv, srv.token("admin"))
    try:
        events.wait(kind="hello", connected=True, timeout=10)  # the event connection is up
        _restart_libvirtd()
        _revive(conn)
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
