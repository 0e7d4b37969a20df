"""Typed answers shared by routers: the ``responses=`` of a route that answers 202 with a task.

Every 202 answer is the one Task model (api/models/tasks.py); api/openapi_doc.py gives every error
response the shared error model, so a route names only the statuses it can answer and why.
"""

from __future__ import annotations

from typing import Any

from kvmkit.api.models.tasks import Task

Responses = dict[int | str, dict[str, Any]]  # FastAPI's `responses=` of a route
TaskAccepted = Task  # the name earlier routers used

ACCEPTED: Responses = {
    202: {"model": Task, "description": "accepted: a task runs the operation; poll GET /api/v1/tasks/{id} "
                                        "(also in the Location header)",
          "headers": {"Location": {"description": "/api/v1/tasks/{id}", "schema": {"type": "string"}}}},
    404: {"description": "no such object (or not delegated to you)"},
    409: {"description": "the object is busy with another task (task_id names it), exists already, or is in the "
                         "wrong state"},
}
