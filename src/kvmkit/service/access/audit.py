"""The audit log: every change made through the server (who, what, target, when, result)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from kvmkit.store.db import Store
from kvmkit.store.models import AuditEntry


def record(store: Store, user: str | None, action: str, target: str, result: str,
           detail: str | None = None, source_ip: str | None = None) -> None:
    """Write one audit entry in its own transaction (so it survives the caller's rollback). Text that the
    database cannot hold (NUL, lone surrogates: a caller's hostile input) is escaped first."""
    with store.session() as s:
        s.add(AuditEntry(user=_safe(user, 64), action=_safe(action, 64) or "?", target=_safe(target, 128) or "",
                         result=result, detail=_safe(detail, 2000) or None, source_ip=_safe(source_ip, 64)))


def _safe(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:limit]


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
