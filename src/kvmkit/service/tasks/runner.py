"""Long operations as tasks: a thread pool, one running task per object, progress, a step journal.

Every task is written to the database (kind, target, intent, the server running it) before it acts, and
every step is journalled before the step is taken. One object (``target``, e.g. ``vm:web1``) runs one task
at a time, across every server on the database: the task's ``task_locks`` row is written with the task
(:mod:`kvmkit.service.tasks.locks`), so a second submission gets :class:`Busy` (HTTP 409) naming the running
task and its server. A server runs the tasks it accepted: its worker claims the task (queued -> running,
only while the task is still this server's), and every step, progress update and the end are written only
while it still is — a server taken for stopped by another cannot carry on (``TakenOver``). Tasks of a
server that stopped are failed and cleaned up by another server, or by the next server started on the
database (:mod:`kvmkit.service.tasks.reaper`), with the recovery handler registered for their kind in
RECOVERY (e.g. removing a half-created VM's volumes).
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

from sqlalchemy import func, select, update

from kvmkit.errors import KvmkitError
from kvmkit.service.tasks import locks
from kvmkit.service.tasks.locks import Busy
from kvmkit.service.tasks.rows import ACTIVE, iso, task_dict
from kvmkit.service.tasks.servers import Membership
from kvmkit.store.db import Store
from kvmkit.store.models import Task, TaskStep

log = logging.getLogger("kvmkit.tasks")

# kind -> handler(conn, task: dict, steps: list[dict]) -> list of report lines
RECOVERY: dict[str, Callable[[Any, dict[str, Any], list[dict[str, Any]]], list[str]]] = {}


__all__ = ["ACTIVE", "RECOVERY", "Busy", "Cancelled", "TakenOver", "TaskContext", "TaskRunner", "iso", "task_dict"]


class Cancelled(KvmkitError):
    code = "cancelled"
    http_status = 409


class TakenOver(KvmkitError):
    """The task is no longer this server's: another server took this one for stopped and failed it."""

    code = "taken_over"
    http_status = 409


class TaskContext:
    """Handed to a task body: journal steps, report progress, honour cancellation."""

    def __init__(self, runner: TaskRunner, task_id: str, owner: str | None = None) -> None:
        self.runner, self.id = runner, task_id
        self.owner = owner or runner.server_id  # the server id the task was accepted under
        self._seq = 0

    def _taken_over(self, t: Task | None) -> TakenOver:
        by = t.owner if t is not None else None
        return TakenOver(f"task {self.id} is no longer run by this server (server {self.owner}): "
                         f"{'server ' + by if by else 'another server'} took it over and failed it",
                         hint="this server was taken for stopped (no heartbeat in time); see GET /api/v1/servers")

    def step(self, name: str, percent: int | None = None, message: str | None = None, *,
             cancellable: bool = True, **data: Any) -> None:
        """Journal a step BEFORE taking it (and optionally update progress); Cancelled when cancel was asked.

        ``cancellable=False`` journals a step in the middle of work that must not stop half-way (e.g.
        between starting a block job and pivoting it): a cancel request then waits for the next
        cancellable step. One transaction locks the task's row, checks that it is still this server's
        (else TakenOver), reads the cancel flag, writes the step and the progress; the event is published
        from the row just written (no second read)."""
        with self.runner.store.session() as s:
            t = s.get(Task, self.id, with_for_update=True)
            if t is None or t.owner != self.owner or t.state != "running":
                raise self._taken_over(t)
            if cancellable and t.cancel_requested:
                raise Cancelled("cancelled on request")
            s.add(TaskStep(task_id=self.id, seq=self._seq + 1, name=name[:64], data=data or None))
            if percent is not None:
                t.percent = max(0, min(100, int(percent)))
            t.message = message or name
            t.updated_at = datetime.now(UTC)
        self._seq += 1
        self.runner.publish_dict(task_dict(t), self.id)
        delay = float(os.environ.get("KVMKIT_TASK_STEP_DELAY", "0") or 0)
        if delay:  # debugging/testing aid: widen the window between steps
            time.sleep(delay)
            self._still_mine()  # a server paused here (SIGSTOP) and taken over does not take the step

    def _still_mine(self) -> None:
        with self.runner.store.session() as s:
            t = s.get(Task, self.id)
            if t is None or t.owner != self.owner or t.state != "running":
                raise self._taken_over(t)

    def progress(self, percent: float, message: str | None = None) -> None:
        values: dict[str, Any] = {"percent": max(0, min(100, int(percent))), "updated_at": datetime.now(UTC)}
        if message:
            values["message"] = message
        with self.runner.store.session() as s:
            done = s.execute(update(Task).where(Task.id == self.id, Task.owner == self.owner,
                                                Task.state == "running").values(**values))
            if not getattr(done, "rowcount", 0):
                raise self._taken_over(s.get(Task, self.id))
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
                 publish: Callable[[dict[str, Any]], None] | None = None,
                 membership: Membership | None = None) -> None:
        from kvmkit.service.tasks.reaper import Reaper

        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kvmkit-task")
        self._publish = publish
        # the connection of another host (a task's intent names its host when it ran on one: recovery cleans
        # up there, never on this server's own libvirt); None: such tasks are reported for a look by hand
        self.host_conn: Callable[[str], Any] | None = None
        self.members = membership or Membership(store)
        self.members.register()
        self._ids = {self.members.id}  # every id this process has run tasks under (a new one after a take-over)
        self.reaper = Reaper(self, RECOVERY)
        self._watchdog: Any = None
        self._local = threading.local()  # .task = (id, owner) in a task's thread
        self.relay: Any = None  # the TaskEventRelay publishing this runner's events to other servers, if any

    @property
    def server_id(self) -> str:
        return self.members.id

    def rejoin(self) -> None:
        """Another server took this one for stopped (a pause longer than the timeout): go on under a new id."""
        self._ids.add(self.members.reregister())

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

    def holder(self, target: str) -> locks.Holder | None:
        """Who holds ``target`` (on any server on the database), or None."""
        return locks.holder_of(self.store, target)

    def busy_with(self, target: str) -> str | None:
        held = self.holder(target)
        return held.holder if held else None

    @contextmanager
    def hold(self, target: str, what: str) -> Iterator[None]:
        """Hold ``target`` for a short synchronous change (e.g. PATCH of a VM); Busy if a task holds it.
        Inside a task body (e.g. a clone holding its new VM's name) the hold is the task's: a 409 names the
        task, and a server taking the task over keeps the hold until it has cleaned up."""
        task = getattr(self._local, "task", None)
        if task is not None:
            with locks.held(self.store, target, what, task[1], holder=task[0]):
                yield
            return
        with locks.held(self.store, target, what, self.server_id):
            yield

    def submit(self, kind: str, target: str, body: TaskBody, *, intent: dict[str, Any] | None = None,
               user: str | None = None, task_id: str | None = None, own_thread: bool = False) -> dict[str, Any]:
        """Record the task with its intent and its hold on ``target`` (one transaction), then run ``body``
        in the pool. Raises Busy if target is held (by a task of any server).

        ``own_thread``: run it in a thread of its own instead, at once: for a task paced by a client (a
        streamed upload or download) that must neither wait for a free worker nor hold one for hours."""
        task_id = task_id or str(uuid.uuid4())
        owner = self.server_id

        def row(s: Any) -> None:
            s.add(Task(id=task_id, kind=kind, target=target, state="queued", intent=intent, user=user,
                       message="queued", owner=owner))

        locks.take(self.store, target, task_id, kind, owner, also=row)
        self._ids.add(owner)
        if own_thread:
            threading.Thread(target=self._run, args=(task_id, owner, body), name=f"kvmkit-task-{kind}",
                             daemon=True).start()
        else:
            self._pool.submit(self._run, task_id, owner, body)
        return self.get(task_id)

    def _finish(self, task_id: str, state: str, *, owner: str | None = None, error: str | None = None,
                result: Any = None) -> dict[str, Any] | None:
        """Record the end (and drop the task's holds) if the task is still ``owner``'s and not ended; None
        otherwise (another server took it over, or it has ended already)."""
        owner = owner or self.server_id
        with self.store.session() as s:
            t = s.get(Task, task_id, with_for_update=True)
            if t is None or t.owner != owner or t.state not in ACTIVE:
                return None
            t.state, t.error, t.result = state, error, result
            if state == "succeeded":
                t.percent, t.message = 100, "done"
            elif state == "cancelled":
                t.message = "cancelled"
            else:
                t.message = "failed"
            t.finished_at = t.updated_at = datetime.now(UTC)
            locks.release(s, task_id)
        return task_dict(t)

    def _claim(self, task_id: str, owner: str) -> dict[str, Any] | None:
        """queued -> running, only while the task is still ``owner``'s; Cancelled when a cancel came first."""
        with self.store.session() as s:
            t = s.get(Task, task_id, with_for_update=True)
            if t is None or t.owner != owner or t.state != "queued":
                return None
            if t.cancel_requested:
                raise Cancelled("cancelled before it started")
            t.state, t.message, t.updated_at = "running", "running", datetime.now(UTC)
        return task_dict(t)

    def _run(self, task_id: str, owner: str, body: TaskBody) -> None:
        ctx = TaskContext(self, task_id, owner)
        final: dict[str, Any] | None = None
        self._local.task = (task_id, owner)
        try:
            claimed = self._claim(task_id, owner)
            if claimed is None:
                log.warning("task %s was taken over by another server before it started: not run", task_id)
                return
            self.publish_dict(claimed, task_id)
            result = body(ctx)
            final = self._finish(task_id, "succeeded", owner=owner, result=result)
            if final is None:
                log.warning("task %s stopped: it ended here, but another server had taken it over (this server "
                            "was taken for stopped): its outcome there stands", task_id)
        except TakenOver as err:
            log.warning("task %s stopped: %s", task_id, err.message)
        except Cancelled as err:
            final = self._finish(task_id, "cancelled", owner=owner, error=err.message)
        except KvmkitError as err:
            final = self._finish(task_id, "failed", owner=owner, error=str(err))
        except Exception as err:  # a bug or an unexpected library error: keep the server alive, say what
            log.exception("task %s crashed", task_id)
            final = self._finish(task_id, "failed", owner=owner, error=f"internal error: {type(err).__name__}: {err}")
        finally:
            self._local.task = None
        if final is not None:
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
        """Ask a task to stop at its next step (on whichever server runs it); finished tasks cannot be."""
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
        """At start-up: fail and clean up the tasks of servers that have stopped (and tasks written before
        servers were recorded). ``conn`` None: libvirt is unreachable; tasks whose kind has a clean-up wait
        for it (:meth:`start_watchdog` retries)."""
        return self.reaper.at_start(conn)

    def start_watchdog(self, conn_get: Callable[[], Any]) -> None:
        """Heartbeat, and take over servers that stop, every ``membership.interval`` seconds (a thread)."""
        from kvmkit.service.tasks.reaper import Watchdog

        self._watchdog = Watchdog(self, conn_get).start()

    def count_active(self) -> int:
        with self.store.session() as s:
            return int(s.scalar(select(func.count()).select_from(Task).where(Task.state.in_(ACTIVE))) or 0)

    def shutdown(self) -> None:
        """A clean stop: queued tasks are not started, running ones finish (the heartbeat goes on meanwhile,
        so no other server takes them over), tasks never started are failed saying so, and the server's row
        says stopped."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        try:
            for d in self.reaper.never_started(self._ids):
                self.publish_dict(d, d["id"])
            self.members.sign_off()
        except Exception:  # the database may be gone: the next server cleans up instead
            log.warning("could not record the clean stop of server %s", self.server_id, exc_info=True)
        if self._watchdog is not None:
            self._watchdog.stop()
        if self.relay is not None:
            self.relay.stop()
