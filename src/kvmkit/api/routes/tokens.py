"""/api/v1/tokens: API tokens (shown once, stored as sha256, revocable). Everyone manages their own;
admins may create tokens for others and revoke any."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from kvmkit.api.deps import require, state
from kvmkit.api.models.access import Token, TokenCreated
from kvmkit.service.access import auth
from kvmkit.service.access.auth import Forbidden, Principal

router = APIRouter(prefix="/tokens", tags=["tokens"])


class NewToken(BaseModel):
    name: str = Field("api", min_length=1, max_length=64)
    user: str | None = Field(None, max_length=64, description="admins only: create it for this user")


@router.get("", response_model=list[Token])
def list_tokens(request: Request, p: Principal = Depends(require("viewer"))) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from kvmkit.store.models import Token

    q = select(Token).where(Token.kind == "api").order_by(Token.id)
    if not p.at_least("admin"):
        q = q.where(Token.user_id == p.user_id)
    with state(request).store.session() as s:
        return [auth.token_dict(t) for t in s.scalars(q)]


@router.post("", status_code=201, response_model=TokenCreated,
             responses={403: {"description": "only admins create tokens for others"},
                        404: {"description": "no such user"}})
def create_token(body: NewToken, request: Request, p: Principal = Depends(require("viewer"))) -> dict[str, Any]:
    """Create a token; its secret is in the answer only."""
    with state(request).store.session() as s:
        if body.user and body.user != p.name:
            if not p.at_least("admin"):
                raise Forbidden("only admins create tokens for other users", hint="create your own token")
            user = auth.get_user(s, body.user)
        else:
            user = auth.get_user(s, p.name)
        tok, secret, _ = auth.create_token(s, user, body.name)
        return auth.token_dict(tok) | {"token": secret}


@router.delete("/{token_id}", status_code=204, responses={404: {"description": "no such token"}})
def revoke_token(request: Request, token_id: int = Path(ge=1, le=2**31 - 1),
                 p: Principal = Depends(require("viewer"))) -> Response:
    with state(request).store.session() as s:
        auth.revoke_token(s, token_id, p)
    return Response(status_code=204)
