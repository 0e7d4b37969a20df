"""ASGI middleware counting answered requests by method, route template and status (``kvmkit_api_requests_total``).

The route is the template the router matched (``/api/v1/vms/{name}``), read from the scope after the request,
so the number of series is bounded by the routes, never by the paths callers send.
"""

from __future__ import annotations

from typing import Any


def route_template(scope: dict[str, Any]) -> str | None:
    """The full template of the route that answered (``/api/v1/vms/{name}``), or None when none matched.

    FastAPI (0.16x) keeps included routers nested: the matched route's own ``path`` lacks the include prefix,
    the full template is its effective route context's ``path_format``. Older FastAPI flattened included
    routes, so the route's ``path_format`` is the full template there; mounts (the portal's files) give their
    mount path."""
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    template = getattr(context, "path_format", None)
    if isinstance(template, str):
        return template
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) else None


class RequestCountMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            st = getattr(getattr(scope.get("app"), "state", None), "kvmkit", None)
            if st is not None:
                st.requests.add(scope["method"], route_template(scope), status[0])
