"""The audit log: every change made through the server (who, what, target, when, result)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kvmkit.store.db import Store
from kvmkit.store.models import AuditEntry


def record(store: Store, user: str | None, action: str, target: str, result: str,
           detail: str | None = None, source_ip: str | None = None) -> None:
    """Write one audit entry in its own transaction (so it survives the caller's rollback)."""
    with store.session() as s:
        s.add(AuditEntry(user=user, action=action, target=target[:128], result=result,
                         detail=(detail or None) and detail[:2000], source_ip=source_ip))


def entry_dict(e: AuditEntry) -> dict[str, Any]:
    from kvmkit.service.tasks.runner import iso

    return {"id": e.id, "at": iso(e.at), "user": e.user, "action": e.action, "target": e.target,
            "result": e.result, "detail": e.detail, "source_ip": e.source_ip}


def entries(store: Store, *, limit: int = 100, user: str | None = None, action: str | None = None,
            target: str | None = None) -> list[dict[str, Any]]:
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(1, min(limit, 1000)))
    if user:
        q = q.where(AuditEntry.user == user)
    if action:
        q = q.where(AuditEntry.action == action)
    if target:
        q = q.where(AuditEntry.target == target)
    with store.session() as s:
        return [entry_dict(e) for e in s.scalars(q)]
