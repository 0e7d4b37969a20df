"""``kvmkit user ...``: users of the server (they live in its database; --db or KVMKIT_DB picks it)."""

from __future__ import annotations

import sys

import typer

from kvmkit.cli.db_option import DB, open_store
from kvmkit.cli.output import console, emit, table

app = typer.Typer(help="users of the server and portal", no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """Users: add, list, delete, grant VMs."""


@app.command()
def add(name: str, role: str = typer.Option(..., "--role", help="admin, operator or viewer"),
        password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
        vm_scope: str = typer.Option("all", "--vm-scope", help="all, or granted (only VMs granted to the user)"),
        db: str = DB) -> None:
    """Add a user (the first admin is created this way). Without a password it can only use tokens."""
    from kvmkit.service.access import auth
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    with open_store(db).session() as s:
        data = auth.user_dict(auth.add_user(s, name, role, password, vm_scope))
    emit(data, lambda d: console().print(f"user {d['name']} added with role {d['role']}"))


@app.command("list")
def list_(db: str = DB) -> None:
    """List users."""
    from sqlalchemy import select

    from kvmkit.service.access import auth
    from kvmkit.store.models import User

    with open_store(db).session() as s:
        rows = [auth.user_dict(u) for u in s.scalars(select(User).order_by(User.name))]
    emit(rows, lambda r: table(r, ["name", "role", "vm_scope", "disabled"]))


@app.command()
def delete(name: str, db: str = DB) -> None:
    """Delete a user and its tokens."""
    from kvmkit.service.access import auth
    with open_store(db).session() as s:
        s.delete(auth.get_user(s, name))
    emit({"deleted": name}, lambda d: console().print(f"user {name} deleted"))


@app.command()
def grant(name: str, vm: str, db: str = DB) -> None:
    """Delegate VM to user NAME (who then sees only its granted VMs). The grant is bound to the VM's UUID:
    it does not pass to a later VM of the same name."""
    from kvmkit.cli.context import connection
    from kvmkit.service.access import auth
    from kvmkit.service.vms.domains import domain

    auth.validate_name(vm, "VM name")
    uuid = str(domain(connection(), vm).UUIDString())  # NotFound (one line) when there is no such VM
    with open_store(db).session() as s:
        u = auth.get_user(s, name)
        auth.grant(s, vm, user=u, vm_uuid=uuid)
        data = {"user": name, "grants": auth.grants_of(s, user=u)}
    emit(data, lambda d: console().print(f"{name} may use: {', '.join(d['grants'])}"))
