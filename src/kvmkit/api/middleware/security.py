"""Security settings of one server, the security headers on every response, and the request guard.

Interface (for other routers and the portal):

- :func:`settings_of(app)` -> :class:`SecuritySettings` (``allowed_origins``, ``max_body_bytes``),
  filled by ``kvmkit serve`` (``--allowed-origin``, ``--max-body``) before the server starts.
- :func:`origin_allowed(scope_or_request, settings, tls)`: the Origin check used by the console
  WebSockets: no Origin header (not a browser) or the server's own origin (scheme + Host) or one of
  ``allowed_origins``.
- :class:`SecurityHeadersMiddleware`: adds :data:`HEADERS` (CSP without 'unsafe-inline',
  X-Frame-Options DENY, nosniff, no-referrer) to every HTTP response, API and portal alike. A route
  that must send a different CSP sets its own ``content-security-policy`` header; it is kept.
- :class:`RequestGuardMiddleware`: before any route runs, (1) a path or query string holding control
  characters, NUL or lone surrogates answers 422 (they cannot name anything and break libvirt and the
  database), and (2) a change request (POST/PUT/PATCH/DELETE) under ``/api/v1/`` without any credential
  (no ``Authorization`` header, no session cookie) answers 401 before its body is read (login excepted).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
DEFAULT_MAX_BODY = 1024 * 1024
PUBLIC_CHANGES = ("/api/v1/auth/login",)


@dataclass
class SecuritySettings:
    allowed_origins: frozenset[str] = field(default_factory=frozenset)
    max_body_bytes: int = DEFAULT_MAX_BODY


def settings_of(app: Any) -> SecuritySettings:
    sec = getattr(app.state, "security", None)
    if sec is None:
        sec = app.state.security = SecuritySettings()
    return sec


def own_origin(headers: Any, tls: bool) -> str | None:
    host = headers.get("host")
    return f"{'https' if tls else 'http'}://{host.lower()}" if host else None


def origin_allowed(headers: Any, settings: SecuritySettings, tls: bool) -> bool:
    """A browser always sends Origin on a WebSocket handshake; a page of another origin (another port of
    the same host included) is refused unless ``--allowed-origin`` names it."""
    origin = headers.get("origin")
    if origin is None:
        return True
    origin = origin.strip().rstrip("/").lower()
    return origin == own_origin(headers, tls) or origin in settings.allowed_origins


def _bad_text(text: str) -> bool:
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def _has_credentials(scope: dict[str, Any]) -> bool:
    for name, value in scope.get("headers") or ():
        if name == b"authorization" and value.strip():
            return True
        if name == b"cookie" and b"kvmkit_session=" in value:
            return True
    return False


async def answer(send: Any, status: int, body: dict[str, Any],
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a whole JSON response from ASGI middleware (before any route ran)."""
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class SecurityHeadersMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers") or ()}
                message["headers"] = [*(message.get("headers") or ()), *(h for h in HEADERS if h[0] not in have)]
            await send(message)

        await self.app(scope, receive, with_headers)


class RequestGuardMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        try:
            query = unquote(scope.get("query_string", b"").decode("latin-1"), errors="strict")
        except UnicodeDecodeError:
            query = "\x00"
        if _bad_text(path) or _bad_text(query):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await answer(send, 422, {"error": "the request path or query contains control characters",
                                      "hint": "names and values are printable text; remove NUL, line breaks and "
                                              "other control characters", "code": "invalid"})
            return
        if (scope["type"] == "http" and scope["method"] in ("POST", "PUT", "PATCH", "DELETE")
                and path.startswith("/api/v1/") and path not in PUBLIC_CHANGES and not _has_credentials(scope)):
            await answer(send, 401, {"error": "authentication required",
                                      "hint": "send 'Authorization: Bearer TOKEN' (kvmkit token create USER) or log in",
                                      "code": "unauthorized"}, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)
