"""/api/v1/users and /api/v1/groups (admins): users, roles, groups and per-VM delegation (grants).

A user with vm_scope 'granted' sees and acts on only the VMs granted to it or to one of its groups;
granting a VM to a non-admin user switches it to 'granted'.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from kvmkit.api.deps import require, state
from kvmkit.api.models.access import Group, GroupGrants, GroupMember, User, UserDetail, UserGrants
from kvmkit.errors import Conflict
from kvmkit.service.access import auth
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["users"])
Role = Literal["viewer", "operator", "admin"]
Scope = Literal["all", "granted"]
ADMIN = Depends(require("admin"))


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role
    password: str | None = Field(None, min_length=8, max_length=1024)
    vm_scope: Scope = "all"


class UserChange(BaseModel):
    role: Role | None = None
    password: str | None = Field(None, min_length=8, max_length=1024)
    vm_scope: Scope | None = None
    disabled: bool | None = None


class Grant(BaseModel):
    vm: str = Field(min_length=1, max_length=64, description="the VM's name")


class NewGroup(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class Member(BaseModel):
    user: str = Field(min_length=1, max_length=64)


def _vm_uuid(request: Request, vm: str) -> str:
    """The UUID a grant of ``vm`` is bound to: the VM must exist (a grant by name alone would pass to
    whatever VM is given that name later)."""
    from kvmkit.errors import NotFound
    from kvmkit.spec.common import validate_name

    validate_name(vm, "VM name")
    from kvmkit.api.deps import vm_uuid

    uuid = vm_uuid(state(request), vm)
    if uuid is None:
        raise NotFound(f"VM '{vm}' not found", hint="grant a VM that exists (GET /api/v1/vms lists them)")
    return uuid


@router.get("/users", response_model=list[User])
def list_users(request: Request, _p: Principal = ADMIN) -> list[dict[str, Any]]:
    from sqlalchemy import select

    from kvmkit.store.models import User

    with state(request).store.session() as s:
        return [auth.user_dict(u) for u in s.scalars(select(User).order_by(User.name))]


@router.post("/users", status_code=201, response_model=User, responses={409: {"description": "the user exists"}})
def add_user(body: NewUser, request: Request, _p: Principal = ADMIN) -> dict[str, Any]:
    with state(request).store.session() as s:
        return auth.user_dict(auth.add_user(s, body.name, body.role, body.password, body.vm_scope))


@router.get("/users/{name}", response_model=UserDetail, responses={404: {"description": "no such user"}})
def show_user(name: str, request: Request, _p: Principal = ADMIN) -> dict[str, Any]:
    with state(request).store.session() as s:
        u = auth.get_user(s, name)
        return auth.user_dict(u) | {"grants": auth.grants_of(s, user=u)}


@router.patch("/users/{name}", response_model=User, responses={404: {"description": "no such user"},
                                          409: {"description": "would lock the caller out"}})
def change_user(name: str, body: UserChange, request: Request, p: Principal = ADMIN) -> dict[str, Any]:
    with state(request).store.session() as s:
        u = auth.get_user(s, name)
        if u.id == p.user_id and (body.disabled or (body.role and body.role != "admin")):
            raise Conflict("you cannot disable or demote yourself", hint="let another admin do it")
        if body.role:
            u.role = body.role
        if body.vm_scope:
            u.vm_scope = body.vm_scope
        if body.password:
            u.password_hash = auth.hash_password(body.password)
        if body.disabled is not None:
            u.disabled = body.disabled
        return auth.user_dict(u)


@router.delete("/users/{name}", status_code=204, responses={404: {"description": "no such user"},
                                                            409: {"description": "would delete the caller"}})
def delete_user(name: str, request: Request, p: Principal = ADMIN) -> Response:
    with state(request).store.session() as s:
        u = auth.get_user(s, name)
        if u.id == p.user_id:
            raise Conflict("you cannot delete yourself", hint="let another admin do it")
        s.delete(u)
    return Response(status_code=204)


@router.get("/users/{name}/grants", responses={404: {"description": "no such user"}})
def user_grants(name: str, request: Request, _p: Principal = ADMIN) -> list[str]:
    with state(request).store.session() as s:
        return auth.grants_of(s, user=auth.get_user(s, name))


@router.post("/users/{name}/grants", status_code=201, response_model=UserGrants,
             responses={404: {"description": "no such user or VM"}})
def grant_user(name: str, body: Grant, request: Request, _p: Principal = ADMIN) -> dict[str, Any]:
    """Delegate a VM to the user (who from now on sees only its granted VMs)."""
    uuid = _vm_uuid(request, body.vm)
    with state(request).store.session() as s:
        u = auth.get_user(s, name)
        auth.grant(s, body.vm, user=u, vm_uuid=uuid)
        return {"user": u.name, "vm_scope": u.vm_scope, "grants": auth.grants_of(s, user=u)}


@router.delete("/users/{name}/grants/{vm}", status_code=204, responses={404: {"description": "no such grant"}})
def revoke_user_grant(name: str, vm: str, request: Request, _p: Principal = ADMIN) -> Response:
    with state(request).store.session() as s:
        auth.revoke_grant(s, vm, user=auth.get_user(s, name))
    return Response(status_code=204)


@router.get("/groups", response_model=list[Group])
def list_groups(request: Request, _p: Principal = ADMIN) -> list[dict[str, Any]]:
    from kvmkit.service.access import groups

    with state(request).store.session() as s:
        return groups.list_groups(s)


@router.post("/groups", status_code=201, response_model=Group, responses={409: {"description": "the group exists"}})
def add_group(body: NewGroup, request: Request, _p: Principal = ADMIN) -> dict[str, Any]:
    with state(request).store.session() as s:
        return {"name": auth.add_group(s, body.name).name, "members": [], "grants": []}


@router.delete("/groups/{name}", status_code=204, responses={404: {"description": "no such group"}})
def delete_group(name: str, request: Request, _p: Principal = ADMIN) -> Response:
    with state(request).store.session() as s:
        s.delete(auth.get_group(s, name))
    return Response(status_code=204)


@router.post("/groups/{name}/members", status_code=201, response_model=GroupMember,
             responses={404: {"description": "no such group or user"}})
def add_member(name: str, body: Member, request: Request, _p: Principal = ADMIN) -> dict[str, str]:
    with state(request).store.session() as s:
        auth.add_member(s, auth.get_group(s, name), auth.get_user(s, body.user))
    return {"group": name, "user": body.user}


@router.delete("/groups/{name}/members/{user}", status_code=204,
               responses={404: {"description": "no such group or user, or the user is not a member"}})
def remove_member(name: str, user: str, request: Request, _p: Principal = ADMIN) -> Response:
    """Take a user out of a group: it loses the VMs granted to the group (``kvmkit user group remove-member``)."""
    from kvmkit.service.access import groups

    with state(request).store.session() as s:
        groups.remove_member(s, auth.get_group(s, name), auth.get_user(s, user))
    return Response(status_code=204)


@router.post("/groups/{name}/grants", status_code=201, response_model=GroupGrants,
             responses={404: {"description": "no such group or VM"}})
def grant_group(name: str, body: Grant, request: Request, _p: Principal = ADMIN) -> dict[str, Any]:
    """Delegate a VM to every member of the group whose vm_scope is 'granted'."""
    uuid = _vm_uuid(request, body.vm)
    with state(request).store.session() as s:
        g = auth.get_group(s, name)
        auth.grant(s, body.vm, group=g, vm_uuid=uuid)
        return {"group": g.name, "grants": auth.grants_of(s, group=g)}


@router.delete("/groups/{name}/grants/{vm}", status_code=204, responses={404: {"description": "no such grant"}})
def revoke_group_grant(name: str, vm: str, request: Request, _p: Principal = ADMIN) -> Response:
    with state(request).store.session() as s:
        auth.revoke_grant(s, vm, group=auth.get_group(s, name))
    return Response(status_code=204)
