"""``kvmkit user ...``: users of the server (they live in its database; --db or KVMKIT_DB picks it)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from kvmkit.cli.db_option import DB, open_store
from kvmkit.cli.output import console, emit, table

app = typer.Typer(help="users of the server and portal", no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """Users: add, list, delete, grant VMs; groups of users (`kvmkit user group ...`)."""


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


group_app = typer.Typer(help="groups of users: members and the VMs granted to them", no_args_is_help=True,
                        add_completion=False)
app.add_typer(group_app, name="group")


@group_app.callback()
def _groups() -> None:
    """Groups: list, add, delete, add or remove members, grant or revoke VMs."""


def _human_groups(rows: list[dict[str, Any]]) -> None:
    table([{"name": r["name"], "members": ", ".join(r["members"]), "grants": ", ".join(r["grants"])} for r in rows],
          ["name", "members", "grants"])


def _print_group(d: dict[str, Any]) -> None:
    console().print(f"group {d['name']}: members {', '.join(d['members']) or '-'}; "
                    f"grants {', '.join(d['grants']) or '-'}")


@group_app.command("list")
def group_list(db: str = DB) -> None:
    """List groups with their members and granted VMs."""
    from kvmkit.service.access import groups

    with open_store(db).session() as s:
        rows = groups.list_groups(s)
    emit(rows, _human_groups)


@group_app.command("add")
def group_add(name: str = typer.Argument(..., help="group name"), db: str = DB) -> None:
    """Create a group."""
    from kvmkit.service.access import auth, groups

    with open_store(db).session() as s:
        data = groups.group_dict(s, auth.add_group(s, name))
    emit(data, lambda d: console().print(f"group {d['name']} added"))


@group_app.command("delete")
def group_delete(name: str = typer.Argument(..., help="group name"), db: str = DB) -> None:
    """Delete a group (its members lose the VMs granted to it)."""
    from kvmkit.service.access import auth

    with open_store(db).session() as s:
        s.delete(auth.get_group(s, name))
    emit({"deleted": name}, lambda d: console().print(f"group {name} deleted"))


@group_app.command("add-member")
def group_add_member(group: str = typer.Argument(..., help="group name"),
                     user: str = typer.Argument(..., help="user name"), db: str = DB) -> None:
    """Add a user to a group."""
    from kvmkit.service.access import auth, groups

    with open_store(db).session() as s:
        g = auth.get_group(s, group)
        auth.add_member(s, g, auth.get_user(s, user))
        s.flush()
        data = groups.group_dict(s, g)
    emit(data, _print_group)


@group_app.command("remove-member")
def group_remove_member(group: str = typer.Argument(..., help="group name"),
                        user: str = typer.Argument(..., help="user name"), db: str = DB) -> None:
    """Take a user out of a group: it loses the VMs granted to the group."""
    from kvmkit.service.access import auth, groups

    with open_store(db).session() as s:
        g = auth.get_group(s, group)
        groups.remove_member(s, g, auth.get_user(s, user))
        s.flush()
        data = groups.group_dict(s, g)
    emit(data, _print_group)


@group_app.command("grant")
def group_grant(group: str = typer.Argument(..., help="group name"), vm: str = typer.Argument(..., help="VM name"),
                db: str = DB) -> None:
    """Delegate a VM to every member of the group whose vm_scope is 'granted' (bound to the VM's UUID)."""
    from kvmkit.cli.context import connection
    from kvmkit.service.access import auth, groups
    from kvmkit.service.vms.domains import domain

    auth.validate_name(vm, "VM name")
    uuid = str(domain(connection(), vm).UUIDString())
    with open_store(db).session() as s:
        g = auth.get_group(s, group)
        auth.grant(s, vm, group=g, vm_uuid=uuid)
        s.flush()
        data = groups.group_dict(s, g)
    emit(data, _print_group)


@group_app.command("revoke")
def group_revoke(group: str = typer.Argument(..., help="group name"), vm: str = typer.Argument(..., help="VM name"),
                 db: str = DB) -> None:
    """Take back a VM granted to a group."""
    from kvmkit.service.access import auth, groups

    with open_store(db).session() as s:
        g = auth.get_group(s, group)
        auth.revoke_grant(s, vm, group=g)
        s.flush()
        data = groups.group_dict(s, g)
    emit(data, _print_group)
