"""Tasks as the API shows them (a dict from the row), shared by the runner and the reaper."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kvmkit.store.models import Task, TaskStep

ACTIVE = ("queued", "running")


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive datetimes that were written as UTC)."""
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()


def task_dict(t: Task, steps: list[TaskStep] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": t.id, "kind": t.kind, "target": t.target, "state": t.state, "percent": t.percent,
        "message": t.message, "error": t.error, "result": t.result, "user": t.user,
        "created_at": iso(t.created_at), "finished_at": iso(t.finished_at), "server": t.owner,
    }
    if steps is not None:
        d["steps"] = [{"seq": s.seq, "name": s.name, "data": s.data, "at": iso(s.at)} for s in steps]
    return d
