"""VM consoles in the browser: single-use console tickets and the serial-console WebSocket.

``POST /api/v1/vms/{name}/console`` (operator allowed on that VM; body optional:
``{"kind": "serial"|"vnc", "view_only": false}``; a viewer who may see the VM gets only
``{"kind": "vnc", "view_only": true}``: it may watch the display, never type) answers
``{"ticket", "expires_at", "ws_path", "kind", "view_only"}``; the page then opens
``ws_path + "?ticket=" + ticket`` within 60 s. A ticket works once, for that VM (name and UUID) and that
kind only (service/access/tickets.py, kept in the database). The serial console lives at
``/api/v1/vms/{name}/console/ws``; the graphical console (issue 18) at ``.../console/vnc/ws``
(api/routes/console_vnc.py, docs/console.md), which shares :func:`accept_console` and
:func:`watch_access` with it.

Every console WebSocket:
- checks ``Origin`` at the handshake (:func:`kvmkit.api.middleware.security.origin_allowed`: the server's own
  origin or ``kvmkit serve --allowed-origin``); a page of another origin gets 403 before anything else;
- authenticates with ``?ticket=`` or the portal's session cookie (``?token=`` is not accepted: long-lived
  tokens do not go into URLs);
- closes (code 4403, with the reason) as soon as access ends: the token or session revoked or expired,
  the user disabled, deleted or demoted, the grant of the VM removed. Changes made through this server
  apply at once (every change request bumps ``ServerState.access_generation``), changes by another
  process on the same database within :data:`RECHECK_S` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import Any, Literal

import libvirt
from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from pydantic import BaseModel

from kvmkit.api.deps import SESSION_COOKIE, check_vm_visible, require, state
from kvmkit.api.middleware.security import origin_allowed, settings_of
from kvmkit.api.models.vms import ConsoleTicket
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["console"])
RECHECK_S = 5.0
WS_PATHS = {"serial": "/api/v1/vms/{name}/console/ws", "vnc": "/api/v1/vms/{name}/console/vnc/ws"}


class ConsoleRequest(BaseModel):
    kind: Literal["serial", "vnc"] = "serial"
    view_only: bool = False


@router.post("/api/v1/vms/{name}/console", status_code=201, response_model=ConsoleTicket,
             responses={404: {"description": "no such VM (or not delegated to you)"},
                        403: {"description": "a viewer asked for more than a view-only graphical console"}})
def console_ticket(name: str, request: Request, body: ConsoleRequest | None = None,
                   p: Principal = Depends(require("viewer"))) -> dict[str, Any]:
    """A single-use ticket (60 s) that opens this VM's console: connect to ``ws_path?ticket=TICKET``.
    Operators allowed on the VM: any console; viewers who may see it: ``{"kind": "vnc", "view_only": true}``."""
    from kvmkit.service.access import tickets
    from kvmkit.service.vms.lifecycle import domain

    body = body or ConsoleRequest()
    check_vm_visible(p, name)
    tickets.check_may_open(p, name, body.kind, body.view_only)
    st = state(request)
    uuid = str(domain(st.hv.get(), name).UUIDString())
    with st.store.session() as s:
        secret, expires = tickets.issue(s, p, name, uuid, body.kind, body.view_only)
    return {"ticket": secret, "expires_at": expires.isoformat(), "kind": body.kind, "view_only": body.view_only,
            "ws_path": WS_PATHS[body.kind].format(name=name)}


@dataclass
class ConsoleAccess:
    user: str
    user_id: int
    token_id: int | None
    vm_uuid: str
    view_only: bool


class Refused(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code, self.reason = code, reason


def _current_uuid(st: Any, name: str) -> str | None:
    try:
        return str(st.hv.get().lookupByName(name).UUIDString()).lower()
    except libvirt.libvirtError:
        return None


def authorize(ws: WebSocket, name: str, kind: str) -> ConsoleAccess:
    """Who may open console ``kind`` of VM ``name`` (blocking: run it in a worker thread). Raises
    :class:`Refused` with the close code (4401 not authenticated, 4403 not allowed, 4404 no such VM)."""
    from kvmkit.errors import KvmkitError
    from kvmkit.service.access import tickets
    from kvmkit.service.access.auth import authenticate

    st = ws.app.state.kvmkit
    ticket = ws.query_params.get("ticket")
    with st.store.session() as s:
        if ticket:
            try:
                t = tickets.take(s, ticket, name, kind)
            except KvmkitError as err:
                raise Refused(4401, err.message) from None
            need = "viewer" if t.view_only else "operator"
            p, why = tickets.access_problem(s, t.user_id, t.token_id, name, t.vm_uuid, need=need)
            if p is None:
                raise Refused(4403, why or "not allowed")
            if _current_uuid(st, name) != t.vm_uuid:
                raise Refused(4404, f"VM {name} is not the VM this ticket was made for")
            return ConsoleAccess(p.name, t.user_id, t.token_id, t.vm_uuid, t.view_only)
        secret = ws.cookies.get(SESSION_COOKIE)
        if not secret:
            raise Refused(4401, "log in first, or open the console with a ticket (POST /api/v1/vms/NAME/console)")
        try:
            p = authenticate(s, secret)
        except KvmkitError as err:
            raise Refused(4401, err.message) from None
        if not p.at_least("operator") or (p.granted is not None and name not in p.granted):
            raise Refused(4403, f"user {p.name} may not open the console of VM {name}")
        uuid = _current_uuid(st, name)
        if uuid is None or not p.may_see_vm(name, uuid):
            raise Refused(4404, f"VM {name} not found")
        return ConsoleAccess(p.name, p.user_id, p.token_id, uuid, False)


async def watch_access(ws: WebSocket, name: str, access: ConsoleAccess) -> str:
    """Return (the reason) once this console's access has ended; runs for the console's lifetime. Checks
    the database again when any change request was answered here, and every RECHECK_S seconds."""
    from starlette.concurrency import run_in_threadpool

    from kvmkit.service.access import tickets

    st = ws.app.state.kvmkit
    loop = asyncio.get_running_loop()

    def check() -> str | None:
        with st.store.session() as s:
            need = "viewer" if access.view_only else "operator"  # a viewer watching stays while it is a viewer
            _p, why = tickets.access_problem(s, access.user_id, access.token_id, name, access.vm_uuid, need=need)
            return why

    seen, last = st.access_generation, loop.time()
    while True:
        await asyncio.sleep(0.25)
        if st.access_generation == seen and loop.time() - last < RECHECK_S:
            continue
        seen, last = st.access_generation, loop.time()
        why = await run_in_threadpool(check)
        if why:
            return why


async def accept_console(ws: WebSocket, name: str, kind: str,
                         subprotocols: tuple[str, ...] = ()) -> ConsoleAccess | None:
    """The handshake every console WebSocket shares: Origin (403 before accepting), then authentication
    and permission (accepted and closed with 44xx and a reason the page can show). None when refused.
    ``subprotocols``: those this console speaks; the first the client offers is accepted (a browser that
    offered one drops a connection whose answer names none, before it could read the close code)."""
    from starlette.concurrency import run_in_threadpool

    st = ws.app.state.kvmkit
    if not origin_allowed(ws.headers, settings_of(ws.app), st.tls):
        await ws.close(code=1008)  # before accept: the handshake answers 403
        return None
    offered = ws.scope.get("subprotocols") or []
    chosen = next((sp for sp in offered if sp in subprotocols), None)
    try:
        access = await run_in_threadpool(authorize, ws, name, kind)
    except Refused as err:
        await ws.accept(subprotocol=chosen)
        await ws.close(code=err.code, reason=err.reason[:120])
        return None
    await ws.accept(subprotocol=chosen)
    return access


def _open_console(conn: libvirt.virConnect, name: str) -> tuple[libvirt.virDomain, libvirt.virStream]:
    dom = conn.lookupByName(name)
    stream = conn.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    return dom, stream


@router.websocket("/api/v1/vms/{name}/console/ws")
async def console(ws: WebSocket, name: str) -> None:
    from starlette.concurrency import run_in_threadpool

    access = await accept_console(ws, name, "serial")
    if access is None:
        return
    st = ws.app.state.kvmkit
    try:
        _dom, stream = await run_in_threadpool(_open_console, st.hv.get(), name)
    except libvirt.libvirtError as err:
        await ws.close(code=4404, reason=(err.get_error_message() or "no console")[:120])
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    stop = threading.Event()

    def pump() -> None:  # libvirt's blocking recv runs in its own thread
        try:
            while not stop.is_set():
                data = stream.recv(4096)
                if not isinstance(data, bytes) or not data:
                    break
                loop.call_soon_threadsafe(queue.put_nowait, data)
        except libvirt.libvirtError:
            pass
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name=f"console-{name}", daemon=True).start()

    async def to_browser() -> None:
        while (chunk := await queue.get()) is not None:
            await ws.send_bytes(chunk)
        with contextlib.suppress(Exception):
            await ws.close(reason="the console ended (VM stopped?)")

    async def to_guest() -> None:
        while True:
            msg = await ws.receive()
            if msg.get("type") == "websocket.disconnect":
                return
            data = msg.get("bytes") or (msg.get("text") or "").encode()
            if data and not access.view_only:
                await run_in_threadpool(stream.send, data)

    async def guard() -> None:
        why = await watch_access(ws, name, access)
        with contextlib.suppress(Exception):
            await ws.close(code=4403, reason=f"access ended: {why}"[:120])

    tasks = [asyncio.create_task(to_browser()), asyncio.create_task(to_guest()), asyncio.create_task(guard())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        with contextlib.suppress(libvirt.libvirtError):
            stream.finish()
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
