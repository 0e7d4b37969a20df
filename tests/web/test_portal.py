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
    js = httpx.get(f"{portal.url}/static/portal.js", timeout=10)
    assert js.status_code == 200 and "EventSource" in js.text


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
