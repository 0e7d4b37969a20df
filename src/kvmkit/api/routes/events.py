"""/api/v1/events: server-sent events. ``vm`` events (defined, undefined, started, stopped, suspended,
resumed, shutdown, crashed) come from libvirt; ``task`` events on every task change — of this server's
tasks and, on PostgreSQL, of every other server's on the database (service/tasks/relay.py); ``host``
events when the libvirt event connection drops and comes back (after a libvirtd restart)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from kvmkit.api.deps import require, state
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["events"])
KEEPALIVE_S = 10.0


def _allowed(p: Principal, ev: dict[str, Any]) -> bool:
    if p.granted is None:
        return True
    if ev.get("type") == "vm":
        return bool(ev.get("vm")) and p.may_see_vm(str(ev.get("vm")), ev.get("uuid"))
    if ev.get("type") == "task":
        task = ev.get("task") or {}
        return task.get("user") == p.name or str(task.get("target", "")).removeprefix("vm:") in p.granted
    return ev.get("type") == "host"


@router.get("/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "an endless event stream"}})
async def events(request: Request, p: Principal = Depends(require("viewer"))) -> StreamingResponse:
    """Stream events as `event: <type>` / `data: <json>`; a comment line every 10 s keeps it open."""
    st = state(request)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

    def deliver(ev: dict[str, Any]) -> None:
        if _allowed(p, ev):
            loop.call_soon_threadsafe(_put, queue, ev)

    sub = st.hub.subscribe(deliver)
    st.event_clients += 1  # from now on libvirt events invalidate the VM list at once (api/vm_cache.py)

    async def stream() -> AsyncIterator[str]:
        try:
            hello = {"user": p.name, "connected": st.hub.connected, "server": st.runner.server_id}
            yield f"event: hello\ndata: {json.dumps(hello)}\n\n"
            while True:
                if await request.is_disconnected():
                    break
                try:
                    ev = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                yield f"event: {ev.get('type', 'message')}\ndata: {json.dumps(ev, default=str)}\n\n"
        finally:
            st.hub.unsubscribe(sub)
            st.event_clients -= 1

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _put(queue: asyncio.Queue[dict[str, Any]], ev: dict[str, Any]) -> None:
    if not queue.full():
        queue.put_nowait(ev)
