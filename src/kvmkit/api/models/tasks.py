"""The one Task model: every 202 answer, GET /api/v1/tasks[/{id}], POST .../cancel, ``task`` events.

``result`` is the operation's answer once the task succeeded. Its shape depends on ``kind``: the document
says which schema each kind's result has (``x-kvmkit-results`` on ``Task.result``, built from
api/models/task_results.py, every schema also a component), and docs/api.md has the table. Kinds are an open
set (a release adds kinds within v1), so ``result`` is not a discriminated union: a client generated from
an older document would fail to read a task list holding a newer kind. A client reads ``kind`` and parses
``result`` with that kind's schema.

Under KVMKIT_STRICT_RESPONSES (the tests) a succeeded task's result is checked against its kind's model,
and a kind without one fails, naming it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, model_validator

from kvmkit.api.models.base import Out, json_value, strict

TaskState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
# the strict check of a result against its kind's model: set by kvmkit.api.models.task_results when it is imported
# (it imports the area models, which import this module)
RESULT_CHECK: list[Callable[[str, Any], None]] = []


class TaskStep(Out):
    seq: int = Field(description="1, 2, ... in the order the steps were taken")
    name: str = Field(description="e.g. create, define, start, upload")
    data: Any = json_value("what the step was about to do, as journalled before it was taken (an object whose "
                           "keys depend on the step, or null)")
    at: str | None = Field(description="ISO 8601, UTC")


class TaskRecovery(Out):
    """The result of a task the server failed at start-up because a previous server process stopped while it
    ran: what the clean-up did (also in ``error``)."""

    recovery: list[str] = Field(description="one line per clean-up step (undefined VM ..., deleted orphan volume ...)")


class Task(Out):
    """A long operation: poll ``GET /api/v1/tasks/{id}`` (or follow ``task`` events) until ``state`` is
    succeeded, failed or cancelled."""

    id: str
    kind: str = Field(description="the dotted operation name, e.g. vm.create, vm.start, volume.upload (more "
                                  "kinds may be added within v1)")
    target: str = Field(description="what the task holds, e.g. vm:web1, volume:default/disk.qcow2 (another "
                                    "operation on it answers 409 while the task runs)")
    state: TaskState
    percent: int = Field(ge=0, le=100)
    message: str | None = Field(description="the current step or progress, in words")
    error: str | None = Field(description="why it failed or was cancelled")
    result: Any = json_value("the operation's answer once it succeeded (null before); its schema depends on kind: "
                             "see x-kvmkit-results (kind -> schema). A failed task has none, except one failed "
                             "at start-up after the server stopped while it ran: TaskRecovery "
                             "(x-kvmkit-failed-result)")
    user: str | None = Field(description="who started it (kvmkit for the server's own tasks)")
    created_at: str | None = Field(description="ISO 8601, UTC")
    finished_at: str | None = Field(description="ISO 8601, UTC; null while it runs")
    server: str | None = Field(None, description="the id of the server (kvmkit serve process, see GET "
                                                 "/api/v1/servers) that runs or ran it; null for a task written "
                                                 "before servers were recorded")
    steps: list[TaskStep] | None = Field(None, description="GET /api/v1/tasks/{id} only: the journal, each step "
                                                           "written before it was taken")

    @model_validator(mode="after")
    def _result_fits_kind(self) -> Task:
        if self.result is None or not strict():
            return self
        if self.state != "succeeded":
            TaskRecovery.model_validate(self.result)
        elif not RESULT_CHECK:
            raise ValueError("kvmkit.api.models.task_results is not imported: nothing can check task results")
        else:
            RESULT_CHECK[0](self.kind, self.result)
        return self
