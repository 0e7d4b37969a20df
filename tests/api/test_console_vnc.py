"""The graphical console without a browser, against a real ``kvmkit serve`` and real micro-guests with VNC
(created over the API with ``graphics: {"type": "vnc"}``): an RFB client (tests/support/rfb.py) speaks
through /api/v1/vms/{name}/console/vnc/ws to QEMU's VNC server, reads ServerInit, and types on the guest's
VGA console (a shell on tty1) a command that writes a marker to the serial port, found in the serial log.
Also: who gets which ticket (viewers view-only, operators of another VM nothing), single use and binding to
one VM, the Origin check, view-only sessions whose key presses never reach the guest (after a positive
control), the console closing when access ends, and SPICE ``.vv`` files whose password really logs in."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.api.guest_http import create_micro, deleting, ok_task, wait_console
from tests.api.server import KVMKIT, Server
from tests.conftest import live_conn
from tests.support import spice_link
from tests.support.cleanup import sweep
from tests.support.rfb import RfbClient

pytestmark = pytest.mark.guest
PASSWORD = "vnc-pass-123"


@pytest.fixture(scope="module")
def mod_prefix() -> Iterator[str]:
    p = f"kt-{secrets.token_hex(3)}-"
    yield p
    sweep(live_conn(), p)


@pytest.fixture(scope="module")
def srv(mod_prefix: str) -> Iterator[Server]:
    s = Server("sqlite")
    s.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    s.start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def admin(srv: Server) -> Iterator[httpx.Client]:
    with srv.client(srv.token("admin")) as c:
        yield c


@pytest.fixture(scope="module")
def vms(srv: Server, admin: httpx.Client, mod_prefix: str) -> Iterator[dict[str, str]]:
    """Three guests: ``vnc`` (running, VNC), ``other`` (running, VNC), ``plain`` (shut off, no graphics)."""
    names = {k: f"{mod_prefix}{k}" for k in ("vnc", "other", "plain")}
    with deleting(admin, *names.values()):
        create_micro(admin, names["vnc"], graphics={"type": "vnc"})
        create_micro(admin, names["other"], graphics={"type": "vnc"})
        create_micro(admin, names["plain"], start=False)
        for key in ("vnc", "other"):
            wait_console(admin, names[key], "KVMKIT-STATUS")  # the tty1 shell is started before the status loop
        yield names


def _user(srv: Server, admin: httpx.Client, name: str, role: str, *vms: str) -> httpx.Client:
    r = admin.post("/api/v1/users", json={"name": name, "role": role, "password": "pass-" + name,
                                          "vm_scope": "granted"})
    assert r.status_code == 201, r.text
    for vm in vms:
        assert admin.post(f"/api/v1/users/{name}/grants", json={"vm": vm}).status_code == 201
    return srv.client(admin.post("/api/v1/tokens", json={"name": "t", "user": name}).json()["token"])


def _ticket(client: httpx.Client, vm: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"/api/v1/vms/{vm}/console", json={"kind": "vnc", **body})
    assert r.status_code == 201, r.text
    return r.json()


def _open(srv: Server, path: str, ticket: str | None = None, origin: str | None = None) -> ClientConnection:
    url = f"ws://127.0.0.1:{srv.port}{path}" + (f"?ticket={ticket}" if ticket else "")
    return connect(url, subprotocols=["binary"], open_timeout=30, max_size=None,  # type: ignore[list-item]
                   additional_headers={"Origin": origin} if origin else None, legacy=True)


def _rfb(ws: ClientConnection) -> RfbClient:
    def recv() -> bytes:
        msg = ws.recv(timeout=60)
        assert isinstance(msg, bytes), msg
        return msg
    return RfbClient(ws.send, recv)


def _close_code(ws: ClientConnection) -> int:
    try:
        while True:
            ws.recv(timeout=60)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "closed without a close frame"
        return closed.rcvd.code
    finally:
        ws.close()


def _type_marker(admin: httpx.Client, rfb: RfbClient, vm: str, marker: str) -> None:
    """Type the marker command on the VGA shell until the serial log shows it (the shell on tty1 may not
    read yet when the first keys arrive: Ctrl-U clears a half-read line before typing again)."""
    for attempt in range(4):
        rfb.key(0xFFE3, True)
        rfb.type("u")  # Ctrl-U: kill the line
        rfb.key(0xFFE3, False)
        rfb.type(f"echo {marker} > /dev/ttyS0\n")
        try:
            wait_console(admin, vm, re.escape(marker), timeout=30)
            return
        except TimeoutError:
            if attempt == 3:
                raise


def test_relay_speaks_rfb_and_types_on_the_guest_screen(srv: Server, admin: httpx.Client, vms, mod_prefix) -> None:
    op = _user(srv, admin, f"{mod_prefix}op", "operator", vms["vnc"])
    t = _ticket(op, vms["vnc"])
    assert t["ws_path"] == f"/api/v1/vms/{vms['vnc']}/console/vnc/ws" and t["kind"] == "vnc"
    with _open(srv, t["ws_path"], t["ticket"], origin=srv.url) as ws:
        assert ws.subprotocol == "binary"  # what noVNC asks for
        rfb = _rfb(ws)
        init = rfb.handshake()
        assert (init.width, init.height) == (720, 400), init  # VGA text mode, 80x25 of 9x16 cells
        assert init.name == f"QEMU ({vms['vnc']})"
        rfb.update_request(init.width, init.height)
        assert rfb.read(1) == b"\x00"  # a FramebufferUpdate comes back
        _type_marker(admin, rfb, vms["vnc"], f"KVMKIT-VNC-{secrets.token_hex(4)}")
    op.close()


def test_who_gets_a_ticket_and_what_it_opens(srv: Server, admin: httpx.Client, vms, mod_prefix) -> None:
    op = _user(srv, admin, f"{mod_prefix}op2", "operator", vms["vnc"], vms["plain"])
    viewer = _user(srv, admin, f"{mod_prefix}view", "viewer", vms["vnc"])
    vm, other = vms["vnc"], vms["other"]
    # an operator of another VM gets nothing (404 as if it did not exist); a viewer only view-only VNC
    assert op.post(f"/api/v1/vms/{other}/console", json={"kind": "vnc"}).status_code == 404
    assert viewer.post(f"/api/v1/vms/{other}/console", json={"kind": "vnc", "view_only": True}).status_code == 404
    assert viewer.post(f"/api/v1/vms/{vm}/console", json={"kind": "vnc"}).status_code == 403
    assert viewer.post(f"/api/v1/vms/{vm}/console", json={"kind": "serial", "view_only": True}).status_code == 403
    assert _ticket(viewer, vm, view_only=True)["view_only"] is True
    # no graphics: the console says so at once (4406)
    t = _ticket(op, vms["plain"])
    assert _close_code(_open(srv, t["ws_path"], t["ticket"])) == 4406
    # single use; bound to its VM and kind; no anonymous access; only the page's own origin
    t = _ticket(op, vm)
    with _open(srv, t["ws_path"], t["ticket"]) as ws:
        assert _rfb(ws).handshake().name == f"QEMU ({vm})"
    assert _close_code(_open(srv, t["ws_path"], t["ticket"])) == 4401  # replayed
    assert _close_code(_open(srv, f"/api/v1/vms/{other}/console/vnc/ws", _ticket(op, vm)["ticket"])) == 4401
    serial = op.post(f"/api/v1/vms/{vm}/console", json={"kind": "serial"}).json()
    assert _close_code(_open(srv, t["ws_path"], serial["ticket"])) == 4401
    assert _close_code(_open(srv, t["ws_path"])) == 4401
    with pytest.raises(InvalidStatus) as refused:
        _open(srv, t["ws_path"], _ticket(op, vm)["ticket"], origin="http://evil.example")
    assert refused.value.response.status_code == 403
    op.close()
    viewer.close()


def test_a_view_only_session_never_reaches_the_guest(srv: Server, admin: httpx.Client, vms, mod_prefix) -> None:
    """Positive control first (the operator's keys reach the guest), then a viewer's session asking for
    exclusive access and typing a marker command, pointer and clipboard included, then the operator types
    again on the session it kept: its marker arrives, the viewer's never does (had any key of the viewer
    reached the shell, the operator's line would have been garbled or the viewer's marker printed first)."""
    vm = vms["vnc"]
    op = _user(srv, admin, f"{mod_prefix}op3", "operator", vm)
    viewer = _user(srv, admin, f"{mod_prefix}view3", "viewer", vm)
    before, blocked, after = (f"KVMKIT-VNC-{w}-{secrets.token_hex(4)}" for w in ("before", "viewer", "after"))
    with _open(srv, _ticket(op, vm)["ws_path"], _ticket(op, vm)["ticket"]) as op_ws:
        op_rfb = _rfb(op_ws)
        init = op_rfb.handshake()
        _type_marker(admin, op_rfb, vm, before)
        t = _ticket(viewer, vm, view_only=True)
        with _open(srv, t["ws_path"], t["ticket"]) as view_ws:
            view = _rfb(view_ws)
            assert view.handshake(shared=False).name == f"QEMU ({vm})"  # exclusive asked, shared given
            view.type(f"echo {blocked} > /dev/ttyS0\n")
            view.pointer(10, 10, 1)
            view.pointer(10, 10, 0)
            view.cut_text(f"echo {blocked}\n")
            view.update_request(init.width, init.height)  # not input: it goes through
            assert view.read(1) == b"\x00"
            view_ws.send(b"\x07" + bytes(16))  # no RFB message: the view-only console closes
            assert _close_code(view_ws) == 4400
        op_rfb.type(f"echo {after} > /dev/ttyS0\n")
        wait_console(admin, vm, re.escape(after), timeout=60)
    log = admin.get(f"/api/v1/vms/{vm}/console/log").json()["text"]
    assert before in log and after in log and blocked not in log
    op.close()
    viewer.close()


def test_the_console_closes_when_access_ends_and_says_why_it_cannot_open(srv: Server, admin: httpx.Client, vms,
                                                                       mod_prefix) -> None:
    vm = vms["vnc"]
    name = f"{mod_prefix}op4"
    op = _user(srv, admin, name, "operator", vm, vms["plain"])
    t = _ticket(op, vm)
    ws = _open(srv, t["ws_path"], t["ticket"])
    _rfb(ws).handshake()
    assert admin.delete(f"/api/v1/users/{name}/grants/{vm}").status_code in (200, 204)
    assert _close_code(ws) == 4403
    # a VNC VM that is shut off: ticket given, the console closes with 4409 (not running)
    stopped = vms["other"]
    assert admin.post(f"/api/v1/users/{name}/grants", json={"vm": stopped}).status_code == 201
    ok_task(admin, admin.post(f"/api/v1/vms/{stopped}/actions/destroy"))
    t = _ticket(op, stopped)
    assert _close_code(_open(srv, t["ws_path"], t["ticket"])) == 4409
    ok_task(admin, admin.post(f"/api/v1/vms/{stopped}/actions/start"))
    op.close()


def _vv_fields(text: str) -> dict[str, str]:
    body = text.split("[virt-viewer]\n", 1)[1]
    return dict(line.split("=", 1) for line in body.splitlines() if line and not line.startswith("#"))


def test_spice_vv_file_logs_in_with_its_own_password(srv: Server, admin: httpx.Client, vms, mod_prefix) -> None:
    spice = f"{mod_prefix}spice"
    with deleting(admin, spice):
        create_micro(admin, spice, graphics={"type": "spice"})
        op = _user(srv, admin, f"{mod_prefix}op5", "operator", spice)
        viewer = _user(srv, admin, f"{mod_prefix}view5", "viewer", spice)
        r = op.get(f"/api/v1/vms/{spice}/console/spice.vv")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/x-virt-viewer")
        assert r.headers["content-disposition"] == f'attachment; filename="{spice}.vv"'
        assert r.headers["cache-control"] == "no-store"
        f = _vv_fields(r.text)
        port = int(f["port"])
        assert f["type"] == "spice" and f["host"] == "127.0.0.1" and f["delete-this-file"] == "1"
        assert spice in f["title"] and "SSH tunnel" in f["title"]
        assert f"ssh -N -L {port}:127.0.0.1:{port} root@127.0.0.1" in r.text  # the tunnel to this server
        assert "ssh" in r.headers["x-kvmkit-hint"]
        assert spice_link.login("127.0.0.1", port, f["password"]) == spice_link.LINK_OK
        assert spice_link.login("127.0.0.1", port, "not-" + f["password"]) == spice_link.LINK_PERMISSION_DENIED
        # a newer file replaces the older ticket; the password is in no log
        newer = _vv_fields(op.get(f"/api/v1/vms/{spice}/console/spice.vv").text)
        assert spice_link.login("127.0.0.1", port, f["password"]) == spice_link.LINK_PERMISSION_DENIED
        assert spice_link.login("127.0.0.1", port, newer["password"]) == spice_link.LINK_OK
        assert f["password"] not in srv.log() and newer["password"] not in srv.log()
        # who may not: viewers, operators of other VMs, VNC VMs
        assert viewer.get(f"/api/v1/vms/{spice}/console/spice.vv").status_code == 403
        assert op.get(f"/api/v1/vms/{vms['vnc']}/console/spice.vv").status_code == 404
        r = admin.get(f"/api/v1/vms/{vms['vnc']}/console/spice.vv")
        assert r.status_code == 409 and r.json()["code"] == "no_display"
        # the CLI writes the same file
        out = srv.data_dir / "cli.vv"
        run = subprocess.run([KVMKIT, "--json", "vm", "console", spice, "--spice-file", str(out)], env=srv.env,
                             capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 0, run.stderr
        data = json.loads(run.stdout)
        cli = _vv_fields(out.read_text())
        assert cli["port"] == str(port) and data["port"] == port and "password" not in data
        assert spice_link.login("127.0.0.1", port, cli["password"]) == spice_link.LINK_OK
        op.close()
        viewer.close()
