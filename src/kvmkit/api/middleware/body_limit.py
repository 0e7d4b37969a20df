"""A cap on request bodies, enforced before anything parses them (ASGI middleware).

Interface:

- :class:`BodyLimitMiddleware(app, max_bytes=None, exempt=is_streaming)`: a request whose
  ``Content-Length`` is above the cap answers **413** at once, without reading the body; a chunked body
  (no Content-Length) is counted as it streams in and answers 413 as soon as it passes the cap, whatever
  the route was doing with it. ``max_bytes=None`` reads the cap from the server's
  :class:`kvmkit.api.middleware.security.SecuritySettings` (``kvmkit serve --max-body``, default 1 MiB).
- Streamed uploads are exempt: a route that streams its body to disk (volume uploads) registers its
  path with :func:`register_streaming` (a regular expression matched against the whole path, e.g.
  ``r"/api/v1/pools/[^/]+/volumes/[^/]+/content"``), at import time of its router module. Such a route
  must bound what it accepts itself (the volume's size). The volume content/upload paths are registered
  here already. ``exempt`` may be any ``(scope) -> bool`` predicate instead.

The 413 answer is kvmkit's error shape: ``{"error", "hint", "code": "too_large"}``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from kvmkit.api.middleware.security import answer, settings_of

_STREAMING: list[re.Pattern[str]] = []


def register_streaming(pattern: str) -> None:
    """Exempt the paths matching ``pattern`` (the whole path) from the body cap: streamed uploads."""
    compiled = re.compile(pattern)
    if all(p.pattern != compiled.pattern for p in _STREAMING):
        _STREAMING.append(compiled)


def is_streaming(scope: dict[str, Any]) -> bool:
    path = scope.get("path", "")
    return any(p.fullmatch(path) for p in _STREAMING)


register_streaming(r"/api/v1/pools/[^/]+/volumes/[^/]+/(content|upload)")
register_streaming(r"/api/v1/vms/[^/]+/guest/copy-in")  # bounded by the route itself (1 GiB)


class BodyTooLarge(Exception):
    """Raised into the route when a streamed body passes the cap (the middleware answers 413)."""


def _too_large(limit: int) -> dict[str, Any]:
    return {"error": f"the request body is larger than {limit} bytes",
            "hint": "send a smaller body; large data goes through the streamed upload routes "
                    "(e.g. volume upload)", "code": "too_large"}


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_bytes: int | None = None,
                 exempt: Callable[[dict[str, Any]], bool] = is_streaming) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = exempt

    def _limit(self, scope: dict[str, Any]) -> int:
        if self.max_bytes is not None:
            return self.max_bytes
        app = scope.get("app")
        return settings_of(app).max_body_bytes if app is not None else 1024 * 1024

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.exempt(scope):
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        length = None
        for name, value in scope.get("headers") or ():
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = limit + 1
        if length is not None and length > limit:
            await answer(send, 413, _too_large(limit), [(b"connection", b"close")])
            return
        seen = {"bytes": 0, "over": False, "started": False, "answered": False}

        async def counted() -> dict[str, Any]:
            if seen["over"]:
                raise BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                seen["bytes"] += len(message.get("body", b""))
                if seen["bytes"] > limit:
                    seen["over"] = True
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            if seen["over"] and not seen["started"]:
                # whatever the route made of the broken body (400, 422, 500), the answer is 413
                if not seen["answered"]:
                    seen["answered"] = True
                    await answer(send, 413, _too_large(limit), [(b"connection", b"close")])
                return
            if message["type"] == "http.response.start":
                seen["started"] = True
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except BodyTooLarge:
            if seen["started"]:
                raise
        except Exception:
            if not seen["over"] or seen["started"]:
                raise
        if seen["over"] and not seen["answered"] and not seen["started"]:
            await answer(send, 413, _too_large(limit), [(b"connection", b"close")])
