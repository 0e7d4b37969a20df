"""Long operations as tasks: a thread pool, one running task per object, progress, a step journal.

Every task is written to the database (kind, target, intent) before it acts, and every step is journalled
before the step is taken. One object (``target``, e.g. ``vm:web1``) runs one task at a time: submitting a
second gets :class:`Busy` (HTTP 409) naming the running task. At start-up :meth:`TaskRunner.recover`
marks tasks that were queued or running when the server died as failed, saying where they stopped, and
runs the recovery handler registered for their kind (e.g. removing a half-created VM's volumes).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from kvmkit.errors import Conflict, KvmkitError
from kvmkit.store.db import Store
from kvmkit.store.models import Task, TaskStep

log = logging.getLogger("kvmkit.tasks")

ACTIVE = ("queued", "running")
# kind -> handler(conn, task: dict, steps: list[dict]) -> list of report lines
RECOVERY: dict[str, Callable[[Any, dict[str, Any], list[dict[str, Any]]], list[str]]] = {}


class Busy(Conflict):
    """Another task holds the object."""

    def __init__(self, target: str, task_id: str, kind: str) -> None:
        super().__init__(f"{target} is busy with task {task_id} ({kind})",
                         hint=f"wait for it (GET /api/v1/tasks/{task_id}) or cancel it, then retry")
        self.task_id = task_id

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "task_id": self.task_id}


class Cancelled(KvmkitError):
    code = "cancelled"
    http_status = 409


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC (SQLite hands back naive datetimes that were written as UTC)."""
    if dt is None:
        return None
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()


def task_dict(t: Task, steps: list[TaskStep] | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": t.id, "kind": t.kind, "target": t.target, "state": t.state, "percent": t.percent,
        "message": t.message, "error": t.error, "result": t.result, "user": t.user,
        "created_at": iso(t.created_at), "finished_at": iso(t.finished_at),
    }
    if steps is not None:
        d["steps"] = [{"seq": s.seq, "name": s.name, "data": s.data, "at": iso(s.at)} for s in steps]
    return d


class TaskContext:
    """Handed to a task body: journal steps, report progress, honour cancellation."""

    def __init__(self, runner: TaskRunner, task_id: str) -> None:
        self.runner, self.id = runner, task_id
        self._seq = 0

    def step(self, name: str, percent: int | None = None, message: str | None = None, *,
             cancellable: bool = True, **data: Any) -> None:
        """Journal a step BEFORE taking it (and optionally update progress); Cancelled when cancel was asked.

        ``cancellable=False`` journals a step in the middle of work that must not stop half-way (e.g.
        between starting a block job and pivoting it): a cancel request then waits for the next
        cancellable step. One transaction reads the cancel flag, writes the step and the progress; the
        event is published from the row just written (no second read)."""
        with self.runner.store.session() as s:
            t = s.get(Task, self.id)
            if cancellable and t is not None and t.cancel_requested:
                raise Cancelled("cancelled on request")
            s.add(TaskStep(task_id=self.id, seq=self._seq + 1, name=name[:64], data=data or None))
            if t is not None:
                if percent is not None:
                    t.percent = max(0, min(100, int(percent)))
                t.message = message or name
                t.updated_at = datetime.now(UTC)
        self._seq += 1
        self.runner.publish_dict(task_dict(t) if t is not None else None, self.id)
        delay = float(os.environ.get("KVMKIT_TASK_STEP_DELAY", "0") or 0)
        if delay:  # debugging/testing aid: widen the window between steps
            time.sleep(delay)

    def progress(self, percent: float, message: str | None = None) -> None:
        with self.runner.store.session() as s:
            t = s.get(Task, self.id)
            if t is not None:
                t.percent = max(0, min(100, int(percent)))
                if message:
                    t.message = message
                t.updated_at = datetime.now(UTC)
        self.runner.publish_task(self.id)

    @property
    def cancel_requested(self) -> bool:
        with self.runner.store.session() as s:
            return bool(s.scalar(select(Task.cancel_requested).where(Task.id == self.id)))

    def check_cancel(self) -> None:
        if self.cancel_requested:
            raise Cancelled("cancelled on request")


TaskBody = Callable[[TaskContext], Any]


class TaskRunner:
    def __init__(self, store: Store, *, workers: int = 4,
                 publish: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kvmkit-task")
        self._busy: dict[str, tuple[str, str]] = {}  # target -> (task id, kind)
        self._lock = threading.Lock()
        self._publish = publish
        # the connection of another host (a task's intent names its host when it ran on one: recovery cleans
        # up there, never on this server's own libvirt); None: such tasks are reported for a look by hand
        self.host_conn: Callable[[str], Any] | None = None

    def publish_task(self, task_id: str) -> None:
        if self._publish is None:
            return
        try:
            d = self.get(task_id)
            self._publish({"type": "task", "task": d})
        except Exception:  # events are best effort
            log.debug("cannot publish task %s", task_id, exc_info=True)

    def publish_dict(self, d: dict[str, Any] | None, task_id: str) -> None:
        """Publish a task the caller has just written (read it again when the caller has no row)."""
        if self._publish is None:
            return
        if d is None:
            self.publish_task(task_id)
            return
        try:
            self._publish({"type": "task", "task": d})
        except Exception:  # events are best effort
            log.debug("cannot publish task %s", task_id, exc_info=True)

    def busy_with(self, target: str) -> str | None:
        with self._lock:
            held = self._busy.get(target)
        return held[0] if held else None

    @contextmanager
    def hold(self, target: str, what: str) -> Iterator[None]:
        """Hold ``target`` for a short synchronous change (e.g. PATCH of a VM); Busy if a task holds it."""
        with self._lock:
            if target in self._busy:
                running, running_kind = self._busy[target]
                raise Busy(target, running, running_kind)
            self._busy[target] = (f"sync-{uuid.uuid4()}", what)
            mine = self._busy[target][0]
        try:
            yield
        finally:
            self._release(target, mine)

    def submit(self, kind: str, target: str, body: TaskBody, *, intent: dict[str, Any] | None = None,
               user: str | None = None, task_id: str | None = None, own_thread: bool = False) -> dict[str, Any]:
        """Record the task with its intent, then run ``body`` in the pool. Raises Busy if target is held.

        ``own_thread``: run it in a thread of its own instead, at once: for a task paced by a client (a
        streamed upload or download) that must neither wait for a free worker nor hold one for hours."""
        task_id = task_id or str(uuid.uuid4())
        with self._lock:
            if target in self._busy:
                running, running_kind = self._busy[target]
                raise Busy(target, running, running_kind)
            self._busy[target] = (task_id, kind)
        try:
            with self.store.session() as s:
                s.add(Task(id=task_id, kind=kind, target=target, state="queued", intent=intent, user=user,
                           message="queued"))
        except BaseException:
            self._release(target, task_id)
            raise
        if own_thread:
            threading.Thread(target=self._run, args=(task_id, target, body), name=f"kvmkit-task-{kind}",
                             daemon=True).start()
        else:
            self._pool.submit(self._run, task_id, target, body)
        return self.get(task_id)

    def _release(self, target: str, task_id: str) -> None:
        with self._lock:
            if self._busy.get(target, ("",))[0] == task_id:
                del self._busy[target]

    def _finish(self, task_id: str, state: str, *, error: str | None = None,
                result: Any = None) -> dict[str, Any] | None:
        with self.store.session() as s:
            t = s.get(Task, task_id)
            if t is None:
                return None
            t.state, t.error, t.result = state, error, result
            if state == "succeeded":
                t.percent, t.message = 100, "done"
            elif state == "cancelled":
                t.message = "cancelled"
            else:
                t.message = "failed"
            t.finished_at = t.updated_at = datetime.now(UTC)
        return task_dict(t)

    def _run(self, task_id: str, target: str, body: TaskBody) -> None:
        ctx = TaskContext(self, task_id)
        final: dict[str, Any] | None = None
        try:
            with self.store.session() as s:
                t = s.get(Task, task_id)
                if t is not None:
                    if t.cancel_requested:
                        raise Cancelled("cancelled before it started")
                    t.state, t.message, t.updated_at = "running", "running", datetime.now(UTC)
            self.publish_dict(task_dict(t) if t is not None else None, task_id)
            result = body(ctx)
            final = self._finish(task_id, "succeeded", result=result)
        except Cancelled as err:
            final = self._finish(task_id, "cancelled", error=err.message)
        except KvmkitError as err:
            final = self._finish(task_id, "failed", error=str(err))
        except Exception as err:  # a bug or an unexpected library error: keep the server alive, say what
            log.exception("task %s crashed", task_id)
            final = self._finish(task_id, "failed", error=f"internal error: {type(err).__name__}: {err}")
        finally:
            self._release(target, task_id)
            self.publish_dict(final, task_id)

    def get(self, task_id: str, *, steps: bool = False) -> dict[str, Any]:
        from kvmkit.errors import NotFound

        with self.store.session() as s:
            t = s.get(Task, task_id)
            if t is None:
                raise NotFound(f"task '{task_id}' not found", hint="list tasks with GET /api/v1/tasks")
            rows = list(s.scalars(select(TaskStep).where(TaskStep.task_id == task_id).order_by(TaskStep.seq)))
            return task_dict(t, rows if steps else None)

    def recent(self, *, limit: int = 100, state: str | None = None,
               targets: set[str] | None = None) -> list[dict[str, Any]]:
        q = select(Task).order_by(Task.created_at.desc()).limit(max(1, min(limit, 1000)))
        if state:
            q = q.where(Task.state == state)
        if targets is not None:
            q = q.where(Task.target.in_(sorted(targets)))
        with self.store.session() as s:
            return [task_dict(t) for t in s.scalars(q)]

    def cancel(self, task_id: str) -> dict[str, Any]:
        """Ask a task to stop at its next step; tasks that have finished cannot be cancelled."""
        from kvmkit.errors import InvalidState

        with self.store.session() as s:
            t = s.get(Task, task_id)
            if t is None:
                from kvmkit.errors import NotFound

                raise NotFound(f"task '{task_id}' not found", hint="list tasks with GET /api/v1/tasks")
            if t.state not in ACTIVE:
                raise InvalidState(f"task {task_id} has already {t.state}", hint="only queued or running tasks")
            t.cancel_requested = True
        return self.get(task_id)

    def recover(self, conn: Any) -> list[dict[str, Any]]:
        """Fail tasks left queued/running by a previous server process and clean up after them."""
        out = []
        with self.store.session() as s:
            stale = list(s.scalars(select(Task).where(Task.state.in_(ACTIVE))))
            tasks = [task_dict(t) | {"intent": t.intent} for t in stale]
        for d in tasks:
            with self.store.session() as s:
                steps = [{"seq": r.seq, "name": r.name, "data": r.data}
                         for r in s.scalars(select(TaskStep).where(TaskStep.task_id == d["id"]).order_by(TaskStep.seq))]
            last = steps[-1]["name"] if steps else "before its first step"
            report: list[str] = []
            handler = RECOVERY.get(d["kind"])
            host = (d.get("intent") or {}).get("host")
            on = conn
            if handler is not None and host and host != "local":
                try:
                    on = self.host_conn(host) if self.host_conn is not None else None
                except Exception:
                    on = None
            if handler is not None and on is None:
                where = f"host {host}" if host and host != "local" else "libvirt"
                report = [f"{where} was unreachable at start-up; inspect {d['target']} by hand"]
            elif handler is not None:
                try:
                    report = handler(on, d, steps)
                except Exception as err:
                    log.exception("recovery of task %s failed", d["id"])
                    report = [f"clean-up failed: {err}; inspect {d['target']} by hand"]
            reason = f"interrupted: the server stopped while the task was at step '{last}'"
            if report:
                reason += "; clean-up: " + "; ".join(report)
            self._finish(d["id"], "failed", error=reason, result={"recovery": report})
            out.append({"id": d["id"], "kind": d["kind"], "target": d["target"], "error": reason})
            log.warning("task %s (%s %s) %s", d["id"], d["kind"], d["target"], reason)
        return out

    def count_active(self) -> int:
        with self.store.session() as s:
            return int(s.scalar(select(func.count()).select_from(Task).where(Task.state.in_(ACTIVE))) or 0)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
