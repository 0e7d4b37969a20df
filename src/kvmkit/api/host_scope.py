"""``?host=NAME`` on every route that works on a libvirt host: the layer that makes a route's ``st.hv`` the
named host's pooled connection (default: the local host), so no route needs to know about hosts.

- :func:`host_scope` is a router dependency (api/app.py adds it to the host routers): it checks the name
  against the inventory (404 naming it) and records it for the request (``state.current_host``).
- :func:`host_scoped_runner`: tasks and holds of a request on another host hold ``TARGET@HOST`` (VM names
  are unique per host, not across hosts) and their intent says the host (recovery cleans up there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Query
from starlette.requests import HTTPConnection

from kvmkit.api.state import current_host

HOST_QUERY = Query(None, description="the host to work on: a name from GET /api/v1/hosts (default: the local host)",
                   max_length=64)
# what every host-scoped route may answer because of ?host= (a route's own 404 description, when it has one, is
# kept: its 404 covers the host too)
HOST_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such object, or ?host= names no host of the inventory"}}


async def host_scope(conn: HTTPConnection, host: str | None = HOST_QUERY) -> str | None:
    """Record the request's host; 404 when the inventory has no host of that name."""
    if host is None or host == "local":
        current_host.set(None)
        return None
    st = conn.app.state.kvmkit
    if st.hosts is None:
        from kvmkit.errors import NotFound

        raise NotFound(f"host '{host}' is not in the inventory", hint="see GET /api/v1/hosts")
    from starlette.concurrency import run_in_threadpool

    await run_in_threadpool(st.hosts.record, host)  # NotFound (may read the inventory: not on the event loop)
    current_host.set(host)
    return host


def qualified(target: str) -> str:
    host = current_host.get()
    return f"{target}@{host}" if host and host != "local" else target


def host_scoped_runner(base: type[Any]) -> type[Any]:
    """A TaskRunner subclass holding ``TARGET@HOST`` for requests on another host than the local one."""

    class Runner(base):  # type: ignore[misc, valid-type]
        def submit(self, kind: str, target: str, body: Callable[[Any], Any], **kw: Any) -> dict[str, Any]:
            host = current_host.get()
            if host and host != "local":
                kw["intent"] = {**(kw.get("intent") or {}), "host": host}
            return super().submit(kind, qualified(target), body, **kw)  # type: ignore[no-any-return]

        def busy_with(self, target: str) -> str | None:
            return super().busy_with(qualified(target))  # type: ignore[no-any-return]

        def hold(self, target: str, what: str) -> Any:
            return super().hold(qualified(target), what)

    return Runner
