"""ASGI middleware that writes an audit entry for every change request (POST/PUT/PATCH/DELETE).

Who (the authenticated user, or the name tried at login), what (method + route), target (the path's
object), when, and result (ok, accepted, denied, invalid, failed) from the response status.

It also tells the server state that something changed (``ServerState.changed``) unless the caller was
refused (401, 403, 429): the token cache and the VM list cache forget what they hold, so no request
answered after a change sees the world before it. Requests that change no VM — logins and logouts, API
tokens, users, groups and grants (``NO_VM_CHANGE``) — empty the token cache only: a VM row holds nothing
they change (who may see which VM is decided per request from the caller, whose cached entry is dropped),
so the first VM list after a login needs no rebuild of every row.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from kvmkit.service.access import audit

CHANGES = ("POST", "PUT", "PATCH", "DELETE")
# path prefixes of change requests that change no VM row (segment-wise: /api/v1/users, /api/v1/users/...)
NO_VM_CHANGE = ("/api/v1/auth", "/api/v1/tokens", "/api/v1/users", "/api/v1/groups")


def _result(status: int) -> str:
    if status == 202:
        return "accepted"
    if status < 400:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    if status < 500:
        return "invalid"
    return "failed"


def _may_have_changed(status: int) -> bool:
    """401, 403 and 429 refused the caller before anything was done; any other answer (even a 409 from a
    change that stopped halfway) may follow a change. Skipping those also keeps a flood of refused requests
    from emptying the caches."""
    return status not in (401, 403, 429)


def _changes_vms(path: str) -> bool:
    """Whether a change request to ``path`` may change a row of the VM list."""
    return not any(path == p or path.startswith(p + "/") for p in NO_VM_CHANGE)


def _server_state(scope: dict[str, Any]) -> Any:
    return getattr(getattr(scope.get("app"), "state", None), "kvmkit", None)


class AuditMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in CHANGES:
            await self.app(scope, receive, send)
            return
        status = {"code": 500}
        st = _server_state(scope)
        vms = _changes_vms(scope["path"])

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if st is not None and _may_have_changed(status["code"]):
                    st.changed(vms=vms)  # the change is committed: no cached caller or VM list may outlive it
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if st is not None and _may_have_changed(status["code"]):
                st.changed(vms=vms)
            await self._record(scope, status["code"])

    async def _record(self, scope: dict[str, Any], code: int) -> None:
        st = _server_state(scope)
        if st is None:
            return
        state = scope.get("state") or {}
        user = state.get("principal") or state.get("login_name")
        params = scope.get("path_params") or {}
        path = scope["path"]
        for key, value in params.items():  # /api/v1/vms/web1 -> /api/v1/vms/{name}
            path = path.replace(f"/{value}", "/{" + key + "}", 1)
        what = f"{scope['method']} {path}"
        target = "/".join(str(v) for v in params.values()) or scope["path"]
        detail = state.get("audit_detail")
        client = scope.get("client")
        await run_in_threadpool(audit.record, st.store, user, what[:64], target, _result(code),
                                f"HTTP {code}" + (f"; {detail}" if detail else ""), client[0] if client else None)
