"""The graphical console: noVNC in the browser <-> this WebSocket <-> QEMU's VNC server; SPICE files.

``/api/v1/vms/{name}/console/vnc/ws?ticket=`` (tickets: ``POST /api/v1/vms/{name}/console`` with
``{"kind": "vnc", "view_only": bool}``) shares the serial console's handshake (api/routes/console.py:
Origin, then ticket or session cookie, then permission; subprotocol ``binary`` when offered, as noVNC
does). Then libvirt hands the server a socket already connected to QEMU's VNC server with authentication
skipped (service/vms/graphics_console.py: ``virDomainOpenGraphicsFD`` + ``SKIPAUTH``), and the relay
copies RFB both ways: QEMU's bytes to the browser as binary frames, the browser's frames to QEMU. The VNC
password stays inside QEMU; QEMU listens on loopback only, so only this relay reaches it from outside.

A view-only ticket (viewers get nothing else) runs the browser's stream through
:class:`kvmkit.api.rfb_filter.ViewOnlyFilter`: key, pointer, clipboard, power and resize messages are
dropped before QEMU sees them, whatever the page does. The console closes (4403) when access ends
(:func:`watch_access`), and when the VM's display goes away.

Close codes after the handshake, besides the serial console's 4401/4403/4404: 4406 the VM has no VNC
display, 4409 the VM is not running, 4400 the browser sent something that is not RFB (view-only), 4500
libvirt could not open the display.

``GET /api/v1/vms/{name}/console/spice.vv`` (operators allowed on the VM; SPICE VMs that run): remote-viewer's
file with a fresh password valid 120 s for new connections, never logged (docs/console.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

from fastapi import APIRouter, Depends, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

from kvmkit.api.deps import check_vm_visible, require, state
from kvmkit.api.rfb_filter import RfbRefused, ViewOnlyFilter
from kvmkit.api.routes.console import accept_console, watch_access
from kvmkit.errors import InvalidState, KvmkitError, NotFound
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["console"])
log = logging.getLogger("kvmkit.api.console")
SUBPROTOCOLS = ("binary",)
NO_DISPLAY, NOT_RUNNING, NOT_RFB, FAILED = 4406, 4409, 4400, 4500
CHUNK = 256 * 1024


def _close_code(err: KvmkitError) -> int:
    from kvmkit.service.vms.graphics_console import NoDisplay

    if isinstance(err, NoDisplay):
        return NO_DISPLAY
    if isinstance(err, InvalidState):
        return NOT_RUNNING
    if isinstance(err, NotFound):
        return 4404
    return FAILED


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))


@router.websocket("/api/v1/vms/{name}/console/vnc/ws")
async def vnc_console(ws: WebSocket, name: str) -> None:
    from starlette.concurrency import run_in_threadpool

    from kvmkit.service.vms import graphics_console

    access = await accept_console(ws, name, "vnc", SUBPROTOCOLS)
    if access is None:
        return
    st = ws.app.state.kvmkit
    try:
        sock: socket.socket = await run_in_threadpool(graphics_console.open_vnc, st.hv.get(), name)
    except KvmkitError as err:
        await _close(ws, _close_code(err), err.message)
        return
    sock.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=sock)
    view = ViewOnlyFilter() if access.view_only else None
    log.info("VNC console of VM %s opened by %s%s", name, access.user, " (view-only)" if view else "")
    ended: list[tuple[int, str]] = []

    async def to_browser() -> None:
        while data := await reader.read(CHUNK):
            await ws.send_bytes(data)
        ended.append((1000, "the VM's display closed (VM stopped?)"))

    async def to_vm() -> None:
        while True:
            msg = await ws.receive()
            if msg.get("type") == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if not data:  # RFB is binary: text frames carry nothing for QEMU
                continue
            if view is not None:
                try:
                    data = view.feed(data)
                except RfbRefused as err:
                    ended.append((NOT_RFB, f"view-only console: {err}"))
                    return
                if not data:
                    continue
            writer.write(data)
            await writer.drain()

    async def guard() -> None:
        why = await watch_access(ws, name, access)
        ended.append((4403, f"access ended: {why}"))

    tasks = [asyncio.create_task(to_browser()), asyncio.create_task(to_vm()), asyncio.create_task(guard())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    except WebSocketDisconnect:
        pass
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        if ended:
            await _close(ws, *ended[0])
        else:
            await _close(ws, 1000, "closed")
        log.info("VNC console of VM %s closed (%s)%s", name, ended[0][1] if ended else "browser left",
                 f"; {view.dropped} input messages dropped" if view else "")


def _host_name(header: str | None) -> str | None:
    """The host part of a Host header ("h:8080", "[::1]:8080"), None when it is not a plain host name."""
    import re

    if not header:
        return None
    host = header[1:].split("]", 1)[0] if header.startswith("[") else header.rsplit(":", 1)[0]
    return host if re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", host) else None


@router.get("/api/v1/vms/{name}/console/spice.vv", response_class=Response,
            responses={200: {"content": {"application/x-virt-viewer": {}},
                             "description": "remote-viewer's file (INI); it holds a password: keep it private"},
                       404: {"description": "no such VM (or not delegated to you)"},
                       409: {"description": "the VM is not running, or has no SPICE display (code no_display)"}})
def spice_vv(name: str, request: Request, p: Principal = Depends(require("operator"))) -> Response:
    """remote-viewer's ``.vv`` file for this VM's SPICE display, with a fresh password valid 120 s for new
    connections (open sessions stay). A display on loopback needs an SSH tunnel: the file says which."""
    from kvmkit.service.vms import graphics_console

    check_vm_visible(p, name)
    host = _host_name(request.headers.get("host"))
    vv = graphics_console.spice_file(state(request).hv.get(), name, server_host=host)
    log.info("SPICE file for VM %s given to %s (password valid until %s)", name, p.name, vv["expires_at"])
    headers = {"Content-Disposition": f'attachment; filename="{vv["filename"]}"', "Cache-Control": "no-store"}
    if vv["tunnel"]:
        headers["X-Kvmkit-Hint"] = f"the display listens on loopback: first run {vv['tunnel']}"
    return Response(vv["text"], media_type="application/x-virt-viewer", headers=headers)
