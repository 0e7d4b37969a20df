"""Typed answers shared by routers: the task a long operation answers 202 with."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Responses = dict[int | str, dict[str, Any]]  # FastAPI's `responses=` of a route


class TaskAccepted(BaseModel):
    """The task running the operation (poll ``Location``: GET /api/v1/tasks/{id} adds its step journal and,
    once it succeeded, its ``result``)."""

    id: str
    kind: str = Field(description="dotted operation name, e.g. vm.clone")
    target: str = Field(description="what the task holds, e.g. vm:web1 (another operation on it answers 409)")
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    percent: int
    message: str | None = None
    error: str | None = None
    result: None = None
    user: str | None = None
    created_at: str | None = None
    finished_at: str | None = None


ACCEPTED: Responses = {
    202: {"model": TaskAccepted, "description": "accepted: a task runs the operation; poll GET /api/v1/tasks/{id}"},
    404: {"description": "no such object (or not delegated to you)"},
    409: {"description": "the object is busy with another task (task_id names it), exists already, or is in the "
                         "wrong state"},
}
