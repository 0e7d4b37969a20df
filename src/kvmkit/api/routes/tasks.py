"""/api/v1/tasks: long operations with state, percent, message, error and their step journal."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from kvmkit.api.deps import require, state
from kvmkit.api.models.tasks import Task
from kvmkit.errors import NotFound
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/tasks", tags=["tasks"])
TaskState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


def _visible(p: Principal, task: dict[str, Any]) -> bool:
    if p.granted is None:
        return True
    return task["user"] == p.name or task["target"].removeprefix("vm:") in p.granted


@router.get("", response_model=list[Task], response_model_exclude_unset=True)
def list_tasks(request: Request, limit: int = Query(100, ge=1, le=1000), state_: TaskState | None = Query(
        None, alias="state"), p: Principal = Depends(require("viewer"))) -> list[dict[str, Any]]:
    """Newest first. Delegated users see tasks on their VMs and their own."""
    tasks = state(request).runner.recent(limit=limit, state=state_)
    return [t for t in tasks if _visible(p, t)]


def _get(request: Request, task_id: str, p: Principal, steps: bool = False) -> dict[str, Any]:
    task = state(request).runner.get(task_id, steps=steps)
    if not _visible(p, task):
        raise NotFound(f"task '{task_id}' not found", hint="list tasks with GET /api/v1/tasks")
    return task


@router.get("/{task_id}", response_model=Task, responses={404: {"description": "no such task"}})
def get_task(task_id: str, request: Request, p: Principal = Depends(require("viewer"))) -> dict[str, Any]:
    """A task with its journal of steps (each written before the step was taken)."""
    return _get(request, task_id, p, steps=True)


@router.post("/{task_id}/cancel", response_model=Task, response_model_exclude_unset=True,
             responses={404: {"description": "no such task"},
                                             409: {"description": "the task has finished already"}})
def cancel_task(task_id: str, request: Request, p: Principal = Depends(require("operator"))) -> dict[str, Any]:
    """Ask a queued or running task to stop before its next step (a step in progress completes)."""
    _get(request, task_id, p)
    return state(request).runner.cancel(task_id)
