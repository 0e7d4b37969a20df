"""The browser console: a WebSocket that relays a VM's serial console (libvirt's console stream).

Authentication is the portal's session cookie (or ``?token=``), since browsers cannot set headers on a
WebSocket; the caller needs role operator and the VM must be visible to it (delegation).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

import libvirt
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from kvmkit.api.deps import SESSION_COOKIE

router = APIRouter()


def _principal(ws: WebSocket) -> Any:
    from kvmkit.service.access.auth import authenticate

    secret = ws.cookies.get(SESSION_COOKIE) or ws.query_params.get("token")
    if not secret:
        return None
    st = ws.app.state.kvmkit
    try:
        with st.store.session() as s:
            return authenticate(s, secret)
    except Exception:
        return None


def _open_console(conn: libvirt.virConnect, name: str) -> tuple[libvirt.virDomain, libvirt.virStream]:
    dom = conn.lookupByName(name)
    stream = conn.newStream(0)
    dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    return dom, stream


@router.websocket("/api/v1/vms/{name}/console/ws")
async def console(ws: WebSocket, name: str) -> None:
    from starlette.concurrency import run_in_threadpool

    await ws.accept()  # accept first so a refusal can carry a close code and a reason to the page
    p = await run_in_threadpool(_principal, ws)
    if p is None:
        await ws.close(code=4401, reason="log in first")
        return
    if not p.at_least("operator") or not p.may_see_vm(name):
        await ws.close(code=4403, reason=f"user {p.name} may not open the console of VM {name}")
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
        await ws.close(reason="the console ended (VM stopped?)")

    async def to_guest() -> None:
        while True:
            msg = await ws.receive()
            if msg.get("type") == "websocket.disconnect":
                return
            data = msg.get("bytes") or (msg.get("text") or "").encode()
            if data:
                await run_in_threadpool(stream.send, data)

    tasks = [asyncio.create_task(to_browser()), asyncio.create_task(to_guest())]
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
