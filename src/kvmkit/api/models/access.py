"""Typed answers of who-is-calling, users, groups, grants, tokens and the audit log
(kvmkit.service.access)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvmkit.api.models.base import Out

Role = Literal["viewer", "operator", "admin"]
Scope = Literal["all", "granted"]


class Me(Out):
    """``GET /api/v1/auth/me``."""

    name: str
    role: Role
    vm_scope: Scope = Field(description="granted: sees and acts on only the VMs granted to it or its groups")
    vms: list[str] | None = Field(description="vm_scope granted: the VMs it may reach; else null")


class User(Out):
    name: str
    role: Role
    vm_scope: Scope
    disabled: bool
    created_at: str | None = Field(description="ISO 8601, UTC")


class UserDetail(User):
    """``GET /api/v1/users/{name}``: the user and its grants."""

    grants: list[str] = Field(description="the VMs granted to it (not those of its groups)")


class UserGrants(Out):
    """``POST /api/v1/users/{name}/grants``: the user's scope and grants after the grant."""

    user: str
    vm_scope: Scope
    grants: list[str]


class Group(Out):
    name: str
    members: list[str]
    grants: list[str]


class GroupGrants(Out):
    group: str
    grants: list[str]


class GroupMember(Out):
    group: str
    user: str


class Token(Out):
    id: int
    name: str
    kind: str = Field(description="api (sessions of logins are not listed)")
    user: str | None
    created_at: str | None
    expires_at: str | None = Field(description="null: does not expire")
    revoked: bool


class TokenCreated(Token):
    """``POST /api/v1/tokens``: the token, with its secret (shown only here)."""

    token: str = Field(description="kvk_...: send it as `Authorization: Bearer TOKEN`")


class AuditEntry(Out):
    id: int
    at: str | None = Field(description="ISO 8601, UTC")
    user: str | None
    action: str = Field(description="METHOD /route/{template}, or a task kind (vm.create ...)")
    target: str
    result: str = Field(description="ok, accepted, denied, invalid or failed")
    detail: str | None
    source_ip: str | None
