"""``kvmkit token ...``: API tokens (the secret is printed once; the database keeps its sha256)."""

from __future__ import annotations

import typer

from kvmkit.cli.db_option import DB, open_store
from kvmkit.cli.output import console, emit, table

app = typer.Typer(help="API tokens", no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """API tokens: create, list, revoke."""


@app.command()
def create(user: str, name: str = typer.Option("cli", "--name", help="a label for the token"), db: str = DB) -> None:
    """Create an API token for USER and print it (once)."""
    from kvmkit.service.access import auth
    with open_store(db).session() as s:
        tok, secret, _ = auth.create_token(s, auth.get_user(s, user), name)
        data = auth.token_dict(tok) | {"token": secret}
    emit(data, lambda d: console().print(d["token"]))


@app.command("list")
def list_(user: str = typer.Argument(None), db: str = DB) -> None:
    """List API tokens (of USER, or all)."""
    from sqlalchemy import select

    from kvmkit.service.access import auth
    from kvmkit.store.models import Token

    q = select(Token).where(Token.kind == "api").order_by(Token.id)
    with open_store(db).session() as s:
        if user:
            q = q.where(Token.user_id == auth.get_user(s, user).id)
        rows = [auth.token_dict(t) for t in s.scalars(q)]
    emit(rows, lambda r: table(r, ["id", "user", "name", "created_at", "revoked"]))


@app.command()
def revoke(token_id: int, db: str = DB) -> None:
    """Revoke a token by id."""
    from datetime import UTC, datetime

    from kvmkit.errors import NotFound
    from kvmkit.store.models import Token

    with open_store(db).session() as s:
        tok = s.get(Token, token_id)
        if tok is None:
            raise NotFound(f"token {token_id} not found", hint="list tokens with `kvmkit token list`")
        tok.revoked_at = tok.revoked_at or datetime.now(UTC)
    emit({"revoked": token_id}, lambda d: console().print(f"token {token_id} revoked"))
