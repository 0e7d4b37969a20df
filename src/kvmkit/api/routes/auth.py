"""Login (JSON or form post) issuing a token and an HttpOnly SameSite=Strict session cookie; logout; me."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, field_validator

from kvmkit.api.deps import CSRF_COOKIE, SESSION_COOKIE, principal, state
from kvmkit.api.models.access import Me
from kvmkit.api.models.base import Out
from kvmkit.errors import InvalidInput
from kvmkit.service.access import auth
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/auth", tags=["auth"])


class LoginBody(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)

    @field_validator("name", "password")
    @classmethod
    def _text(cls, v: str, info: Any) -> str:
        if any(c < " " or "\ud800" <= c <= "\udfff" for c in v):
            raise ValueError(f"{info.field_name} holds control characters or is not valid Unicode")
        return v


class LoginResult(Out):
    token: str
    csrf_token: str | None
    user: str
    role: str
    expires_in: int


@router.post("/login", response_model=LoginResult,
             responses={401: {"description": "wrong user name or password"},
                        429: {"description": "too many failed logins (5 per minute per user and address)"}},
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"schema": {"$ref": "#/components/schemas/LoginBody"}},
                 "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/LoginBody"}}},
                 "required": True}})
async def login(request: Request, response: Response) -> Any:
    """Check name and password; answer a token (also set as the session cookie) and a CSRF token."""
    from starlette.concurrency import run_in_threadpool

    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            raw: Any = {k: v for k, v in form.items() if isinstance(v, str)}
        else:
            raw = await request.json()
        body = LoginBody.model_validate(raw)
    except Exception as err:
        raise InvalidInput("login needs a name and a password", hint="send {\"name\": ..., \"password\": ...}") from err
    request.state.login_name = body.name
    st = state(request)
    client = request.client.host if request.client else "?"

    def do() -> tuple[str, str, str, str | None]:
        with st.store.session() as s:
            user, secret, csrf = auth.login(s, st.limiter, body.name, body.password, client)
            return user.name, user.role, secret, csrf

    name, role, secret, csrf = await run_in_threadpool(do)
    max_age = auth.SESSION_HOURS * 3600
    response.set_cookie(SESSION_COOKIE, secret, max_age=max_age, httponly=True, samesite="strict",
                        secure=st.tls, path="/")
    if csrf:
        response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="strict",
                            secure=st.tls, path="/")
    return {"token": secret, "csrf_token": csrf, "user": name, "role": role, "expires_in": max_age}


@router.post("/logout", status_code=204)
def logout(request: Request, response: Response, p: Principal = Depends(principal)) -> Response:
    """Revoke the token (or session) used for this request and clear the cookies."""
    st = state(request)
    if p.token_id is not None:
        with st.store.session() as s:
            auth.revoke_token(s, p.token_id, p)
    out = Response(status_code=204)
    out.delete_cookie(SESSION_COOKIE, path="/")
    out.delete_cookie(CSRF_COOKIE, path="/")
    return out


@router.get("/me", response_model=Me)
def me(p: Principal = Depends(principal)) -> dict[str, Any]:
    return {"name": p.name, "role": p.role, "vm_scope": "granted" if p.granted is not None else "all",
            "vms": sorted(p.granted) if p.granted is not None else None}
