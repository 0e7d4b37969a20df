"""Running an API operation as a task: 202 with the task, 409 while its target is busy, audited outcome.

Every long or state-changing operation goes through ``submit``: ``target`` names what the task holds
("vm:NAME", "pool:NAME", "volume:POOL/NAME", "net:NAME", "host"), so a second operation on the same
object answers 409 naming the running task — also when another server on the same database runs it.
The outcome is written to the audit log when the task ends.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from kvmkit.api.models.responses import ACCEPTED
from kvmkit.api.state import ServerState
from kvmkit.service.access.auth import Principal

TASK_RESPONSES = ACCEPTED  # 202 with the Task model (api/models/tasks.py), 404, 409


def not_busy(st: ServerState, target: str) -> None:
    """409 naming the running task, its kind and its server when ``target`` (e.g. vm:NAME) is held by a
    task of any server on the database (checked before anything else)."""
    from kvmkit.service.tasks.locks import busy

    held = st.runner.holder(target)
    if held is not None:
        raise busy(held)


def accepted(task: dict[str, Any]) -> JSONResponse:
    return JSONResponse(task, status_code=202, headers={"Location": f"/api/v1/tasks/{task['id']}"})


def submit(request: Request, st: ServerState, p: Principal, kind: str, target: str, body: Any,
           intent: dict[str, Any], task_id: str | None = None) -> JSONResponse:
    """Run ``body`` as a task holding ``target`` and audit its outcome when it ends."""
    return accepted(start(request, st, p, kind, target, body, intent, task_id))


def start(request: Request, st: ServerState, p: Principal, kind: str, target: str, body: Any,
          intent: dict[str, Any], task_id: str | None = None, *, own_thread: bool = False) -> dict[str, Any]:
    """Like :func:`submit` but return the task (for a route that answers when it ends, e.g. a streamed
    upload: ``own_thread`` runs it at once in a thread of its own, see TaskRunner.submit)."""
    from kvmkit.service.access import audit

    def audited(ctx: Any) -> Any:
        try:
            result = body(ctx)
        except Exception as err:
            audit.record(st.store, p.name, kind, target, "failed", f"task {ctx.id}: {err}")
            raise
        audit.record(st.store, p.name, kind, target, "ok", f"task {ctx.id}")
        return result

    task = st.runner.submit(kind, target, audited, intent=intent, user=p.name, task_id=task_id,
                            own_thread=own_thread)
    request.state.audit_detail = f"task {task['id']}"
    return task
