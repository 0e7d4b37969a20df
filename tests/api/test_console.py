"""The serial-console WebSocket: single-use tickets bound to one VM and kind, the Origin checked at the
handshake, no ``?token=``, and an open console closed as soon as its access ends (token revoked, user
disabled, grant removed) -- against a real server and a running micro-guest."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.api.server import Server

pytestmark = pytest.mark.guest


def _ws_url(server: Server, path: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}{path}" + (f"?{query}" if query else "")


def _ticket(client: httpx.Client, vm: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/api/v1/vms/{vm}/console", json=body or None)
    assert r.status_code == 201, r.text
    return r.json()


def _open(server: Server, vm: str, ticket: dict[str, Any] | None = None, *, path: str | None = None,
          origin: str | None = None, query: str | None = None) -> ClientConnection:
    path = path or (ticket["ws_path"] if ticket else f"/api/v1/vms/{vm}/console/ws")
    q = query if query is not None else (f"ticket={ticket['ticket']}" if ticket else "")
    headers = {"Origin": origin} if origin else None
    return connect(_ws_url(server, path, q), additional_headers=headers, open_timeout=30, legacy=True)


def _closed_with(ws: ClientConnection, timeout: float = 60) -> tuple[int, str]:
    """Read until the server closes; its close code and reason."""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                ws.recv(timeout=1)
            except TimeoutError:
                continue
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code, closed.rcvd.reason
    finally:
        ws.close()
    raise AssertionError(f"console still open after {timeout} s")


def _is_open(ws: ClientConnection) -> bool:
    try:
        ws.send("\r")
        ws.recv(timeout=2)
    except TimeoutError:
        pass
    except ConnectionClosed:
        return False
    return True


@pytest.fixture()
def vm_user(micro_guest, make_user, admin: httpx.Client):
    """A running guest and an operator delegated to it alone."""
    vm = micro_guest("con").name
    name, user = make_user("con", "operator")
    assert admin.post(f"/api/v1/users/{name}/grants", json={"vm": vm}).status_code == 201
    return vm, name, user


def test_tickets_work_once_for_their_vm_and_kind(server: Server, vm_user, micro_guest) -> None:
    vm, _name, user = vm_user
    other = micro_guest("other", start=False).name
    t = _ticket(user, vm)
    assert t["ws_path"] == f"/api/v1/vms/{vm}/console/ws" and t["ticket"].startswith("kvt_") and t["expires_at"]
    ws = _open(server, vm, t)
    assert _is_open(ws)
    ws.close()
    assert _closed_with(_open(server, vm, t))[0] == 4401  # used once already
    # another VM, another kind, an old-style token, nothing
    assert _closed_with(_open(server, vm, _ticket(user, vm), path=f"/api/v1/vms/{other}/console/ws"))[0] == 4401
    assert _closed_with(_open(server, vm, _ticket(user, vm, kind="vnc"), path=t["ws_path"]))[0] == 4401
    token = user.headers["authorization"].split()[1]
    assert _closed_with(_open(server, vm, query=f"token={token}"))[0] == 4401
    assert _closed_with(_open(server, vm, query="ticket=kvt_made-up"))[0] == 4401
    # the delegated user gets no ticket for a VM it was not granted
    assert user.post(f"/api/v1/vms/{other}/console").status_code == 404
    # an expired ticket (its expiry moved into the past in the database)
    late = _ticket(user, vm)
    engine = create_engine(server.db)
    try:
        with engine.begin() as c:
            c.execute(text("UPDATE console_tickets SET expires_at = :t WHERE used_at IS NULL"),
                      {"t": "2000-01-01 00:00:00+00:00"})
    finally:
        engine.dispose()
    assert _closed_with(_open(server, vm, late))[0] == 4401


def test_origin_is_checked_at_the_handshake(server: Server, vm_user) -> None:
    vm, _name, user = vm_user
    for origin in (f"http://127.0.0.1:{server.port + 1}", "http://evil.example", "null"):
        with pytest.raises(InvalidStatus) as err:
            _open(server, vm, _ticket(user, vm), origin=origin)
        assert err.value.response.status_code == 403
    ws = _open(server, vm, _ticket(user, vm), origin=f"http://127.0.0.1:{server.port}")  # the page's own origin
    assert _is_open(ws)
    ws.close()


def test_console_with_the_session_cookie_needs_the_own_origin(server: Server, vm_user) -> None:
    vm, name, _user = vm_user
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/api/v1/auth/login", json={"name": name, "password": "pass-" + name})
        cookie = f"kvmkit_session={r.json()['token']}"
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{server.port}"}
    ws = connect(_ws_url(server, f"/api/v1/vms/{vm}/console/ws"), additional_headers=headers, open_timeout=30,
                 legacy=True)
    assert _is_open(ws)
    ws.close()
    with pytest.raises(InvalidStatus):
        connect(_ws_url(server, f"/api/v1/vms/{vm}/console/ws"), open_timeout=30, legacy=True,
                additional_headers={"Cookie": cookie, "Origin": "http://localhost:9"})


@pytest.mark.parametrize("how", ["revoke-token", "disable-user", "remove-grant", "demote"])
def test_open_console_closes_when_access_ends(server: Server, vm_user, admin: httpx.Client, how: str) -> None:
    vm, name, user = vm_user
    mine = user.post("/api/v1/tokens", json={"name": "console"}).json()
    with server.client(mine["token"]) as c:
        ws = _open(server, vm, _ticket(c, vm))
    assert _is_open(ws)
    if how == "revoke-token":
        r = user.delete(f"/api/v1/tokens/{mine['id']}")
    elif how == "disable-user":
        r = admin.patch(f"/api/v1/users/{name}", json={"disabled": True})
    elif how == "demote":
        r = admin.patch(f"/api/v1/users/{name}", json={"role": "viewer"})
    else:
        r = admin.delete(f"/api/v1/users/{name}/grants/{vm}")
    assert r.status_code in (200, 204), r.text
    code, reason = _closed_with(ws)
    assert code == 4403 and "access ended" in reason, (code, reason)
