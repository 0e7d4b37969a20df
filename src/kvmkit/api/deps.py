"""Request dependencies: who is calling (bearer token or session cookie + CSRF), role checks, VM scope.

For routers: ``Depends(require("operator"))`` gives the caller (401/403 otherwise), then
``check_vm_visible(p, name)`` answers 404 for a VM outside a delegated caller's grants -- call both before
any libvirt or filesystem lookup that depends on the request (see also kvmkit.service.access.policy for
what a non-admin may put into a VM)."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kvmkit.api.state import ServerState
from kvmkit.errors import NotFound
from kvmkit.service.access.auth import Forbidden, Principal, Unauthorized, authenticate, sha256
from kvmkit.store.models import Token

SESSION_COOKIE = "kvmkit_session"
CSRF_COOKIE = "kvmkit_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

bearer = HTTPBearer(auto_error=False, description="an API token (`kvmkit token create USER`) or a login token")


def state(request: Request) -> ServerState:
    return request.app.state.kvmkit


async def _csrf_ok(request: Request, p: Principal) -> bool:
    sent = request.headers.get(CSRF_HEADER)
    if not sent and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    return bool(sent and p.csrf_hash and hmac.compare_digest(sha256(sent), p.csrf_hash))


async def principal(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Principal:
    """The caller. 401 without a valid token; cookie sessions need a CSRF token on changes. A token seen
    in the last few seconds is answered from the server's token cache (api/token_cache.py)."""
    st = state(request)
    secret = creds.credentials if creds else None
    from_cookie = False
    if not secret:
        secret = request.cookies.get(SESSION_COOKIE)
        from_cookie = bool(secret)
    if not secret:
        raise Unauthorized("authentication required",
                           hint="send 'Authorization: Bearer TOKEN' (kvmkit token create USER) or log in")
    cache = st.tokens
    key = cache.key(secret)
    p, due = cache.lookup(key)
    if p is None:
        p = await asyncio.shield(_lookup(st, key, secret))  # a caller that goes away leaves it to the others
    elif due:
        _lookup(st, key, secret)  # renewed in the background; this request goes on with the cached caller
    if from_cookie and request.method not in SAFE_METHODS and not await _csrf_ok(request, p):
        raise Forbidden("missing or wrong CSRF token",
                        hint=f"send the {CSRF_HEADER} header (or csrf_token form field) given at login")
    request.state.principal = p.name
    if p.granted is not None and p.uuid_of is None:
        p.uuid_of = lambda name: vm_uuid(st, name)  # grants are bound to UUIDs: tell the current one
    return p


def vm_uuid(st: ServerState, name: str) -> str | None:
    """The UUID of the VM called ``name`` now (None when there is none), asked of libvirt: an access check
    never trusts the cached VM list, whose events may still be on their way (a VM undefined and made again
    under its name a moment ago)."""
    import libvirt

    try:
        return str(st.hv.get().lookupByName(name).UUIDString()).lower()
    except libvirt.libvirtError:
        return None


def _lookup(st: ServerState, key: str, secret: str) -> asyncio.Task[Principal]:
    """The database lookup of a token (in a worker thread), started once and shared by every request that
    waits for it; it caches the caller, or drops the token from the cache when it is not valid."""
    cache = st.tokens
    task = cache.in_flight.get(key)
    if task is not None:
        return task

    def check() -> Principal:
        generation = cache.generation
        with st.store.session() as s:
            found = authenticate(s, secret)
            tok = s.get(Token, found.token_id) if found.token_id is not None else None
            expires_at = tok.expires_at if tok is not None else None
        cache.put(key, found, expires_at, generation)  # after the commit of last_used_at
        return found

    async def run() -> Principal:
        from starlette.concurrency import run_in_threadpool

        try:
            return await run_in_threadpool(check)
        except BaseException:
            cache.drop(key)
            raise
        finally:
            del cache.in_flight[key]

    task = asyncio.get_running_loop().create_task(run())
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved even when nobody waits
    cache.in_flight[key] = task
    return task


def require(role: str) -> Callable[..., Any]:
    """A dependency that lets through callers whose role is at least ``role`` (viewer < operator < admin)."""

    async def dep(p: Principal = Depends(principal)) -> Principal:
        if not p.at_least(role):
            raise Forbidden(f"user '{p.name}' (role {p.role}) may not do this; it needs role {role}",
                            hint="ask an admin for a role with more rights")
        return p

    return dep


def require_unrestricted(p: Principal, what: str) -> None:
    if p.granted is not None:
        raise Forbidden(f"user '{p.name}' acts only on the VMs delegated to it and may not {what}",
                        hint="ask an admin to grant the VM or to set vm_scope to 'all'")


def check_vm_visible(p: Principal, name: str) -> None:
    """404 (as if it did not exist) for a VM outside a delegated user's grants (a grant counts only for the
    VM whose UUID it was made for)."""
    if not p.may_see_vm(name):
        raise NotFound(f"VM '{name}' not found", hint="list the VMs you may use with GET /api/v1/vms")


viewer = Depends(require("viewer"))
operator = Depends(require("operator"))
admin = Depends(require("admin"))
