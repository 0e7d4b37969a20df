"""Groups of users as the CLI and the API show and change them: the list with members and grants, and removing
a member (``kvmkit user group ...``; ``/api/v1/groups``). Creating groups, adding members and grants are in
:mod:`kvmkit.service.access.auth`.

A member removed from a group loses the VMs granted to the group at its next request (the server's cache
of callers is emptied by every change it answers; another process's change within the cache's TTL).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from kvmkit.errors import NotFound
from kvmkit.service.access import auth
from kvmkit.store.models import Group, GroupMember, User


def members_of(s: Session, group: Group) -> list[str]:
    return sorted(s.scalars(select(User.name).join(GroupMember, GroupMember.user_id == User.id)
                            .where(GroupMember.group_id == group.id)))


def group_dict(s: Session, group: Group) -> dict[str, Any]:
    return {"name": group.name, "members": members_of(s, group), "grants": auth.grants_of(s, group=group)}


def list_groups(s: Session) -> list[dict[str, Any]]:
    """Every group with its members and the VMs granted to it, by name."""
    return [group_dict(s, g) for g in s.scalars(select(Group).order_by(Group.name))]


def remove_member(s: Session, group: Group, user: User) -> None:
    """Take ``user`` out of ``group`` (NotFound when it is not a member)."""
    row = s.scalar(select(GroupMember).where(GroupMember.group_id == group.id, GroupMember.user_id == user.id))
    if row is None:
        raise NotFound(f"user '{user.name}' is not a member of group '{group.name}'",
                       hint="list groups and their members with `kvmkit user group list` or GET /api/v1/groups")
    s.delete(row)
