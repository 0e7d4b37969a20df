"""The portal page and its browser console WebSocket, against a real server and a real micro-guest."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.api.server import Server

PASSWORD = "portal-pass-123"


@pytest.fixture(scope="module")
def portal() -> Iterator[Server]:
    srv = Server("sqlite")
    srv.cli("user", "add", "padmin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    srv.cli("user", "add", "pviewer", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.cleanup()


def login(srv: Server, user: str) -> httpx.Client:
    c = httpx.Client(base_url=srv.url, timeout=30)
    r = c.post("/api/v1/auth/login", json={"name": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c


@pytest.mark.guest
def test_page_and_assets_are_served(portal):
    page = httpx.get(f"{portal.url}/", timeout=10)
    assert page.status_code == 200 and "<title>kvmkit</title>" in page.text
    js = httpx.get(f"{portal.url}/static/js/lib/live.js", timeout=10)
    assert js.status_code == 200 and "EventSource" in js.text
    assert js.headers["content-type"].startswith("text/javascript")
    vendored = httpx.get(f"{portal.url}/static/vendor/preact.js", timeout=10, headers={"Accept-Encoding": "gzip"})
    assert vendored.status_code == 200 and vendored.headers.get("content-encoding") == "gzip"
    again = httpx.get(f"{portal.url}/static/vendor/preact.js", timeout=10,
                      headers={"If-None-Match": vendored.headers["etag"]})
    assert again.status_code == 304
    for bad in ("/static/../routes.py", "/static/%2e%2e/routes.py", "/static/.hidden", "/static/nothing.js"):
        assert httpx.get(f"{portal.url}{bad}", timeout=10).status_code == 404, bad


@pytest.mark.guest
def test_session_cookie_is_httponly_and_strict(portal):
    c = login(portal, "padmin")
    cookie = c.post("/api/v1/auth/login", json={"name": "padmin", "password": PASSWORD}).headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert c.get("/api/v1/vms").status_code == 200  # the cookie alone reads
    c.close()


def _ws_url(srv: Server, name: str) -> str:
    return f"ws://127.0.0.1:{srv.port}/api/v1/vms/{name}/console/ws"


@pytest.mark.guest
def test_browser_console_relays_the_serial_shell(portal, micro_guest):
    guest = micro_guest("portal")
    guest.log.wait_for("KVMKIT-GUEST-READY")
    c = login(portal, "padmin")
    cookie = f"kvmkit_session={c.cookies['kvmkit_session']}"
    with ws_connect(_ws_url(portal, guest.name), additional_headers={"Cookie": cookie}, open_timeout=20) as ws:
        ws.send("echo portal-$((6*7))\r")
        seen = b""
        deadline = time.monotonic() + 120  # a guard: the shell answers within a second when idle
        while b"portal-42" not in seen and time.monotonic() < deadline:
            try:
                msg = ws.recv(timeout=2)
            except TimeoutError:
                ws.send("\r")
                continue
            seen += msg if isinstance(msg, bytes) else msg.encode()
        assert b"portal-42" in seen, seen[-500:]
    c.close()


@pytest.mark.guest
@pytest.mark.parametrize(("user", "code"), [(None, 4401), ("pviewer", 4403)])
def test_console_needs_an_operator_session(portal, micro_guest, user, code):
    guest = micro_guest("deny", start=False)
    headers = {}
    if user:
        c = login(portal, user)
        headers["Cookie"] = f"kvmkit_session={c.cookies['kvmkit_session']}"
    with pytest.raises(ConnectionClosed) as info, \
            ws_connect(_ws_url(portal, guest.name), additional_headers=headers, open_timeout=20) as ws:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == code


@pytest.mark.guest
def test_portal_console_flow_with_a_ticket(portal, micro_guest):
    """What portal.js does: with the session cookie and the CSRF token, ask for a ticket, then open the
    WebSocket from the page's own origin with ?ticket=; the same ticket does not work twice."""
    guest = micro_guest("ticket")
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=60)
    c = login(portal, "padmin")
    csrf = c.cookies["kvmkit_csrf"]
    assert c.post(f"/api/v1/vms/{guest.name}/console", json={"kind": "serial"}).status_code == 403  # no CSRF
    t = c.post(f"/api/v1/vms/{guest.name}/console", json={"kind": "serial"}, headers={"X-CSRF-Token": csrf}).json()
    url = f"ws://127.0.0.1:{portal.port}{t['ws_path']}?ticket={t['ticket']}"
    origin = {"Origin": f"http://127.0.0.1:{portal.port}"}
    with ws_connect(url, additional_headers=origin, open_timeout=20) as ws:
        ws.send("echo ticket-$((6*7))\r")
        seen = b""
        deadline = time.monotonic() + 30
        while b"ticket-42" not in seen and time.monotonic() < deadline:
            try:
                msg = ws.recv(timeout=2)
            except TimeoutError:
                ws.send("\r")
                continue
            seen += msg if isinstance(msg, bytes) else msg.encode()
        assert b"ticket-42" in seen, seen[-500:]
    with pytest.raises(ConnectionClosed) as info, ws_connect(url, additional_headers=origin, open_timeout=20) as ws:
        ws.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4401
    c.close()
