"""One task per object, for every server on the database: a ``task_locks`` row per held target.

Taking a target is an INSERT of its row: the primary key makes it atomic on SQLite and PostgreSQL alike
(a second INSERT of the same target fails; on PostgreSQL it waits for the first transaction and fails once
that commits), so two servers — or two requests on one server — never both hold ``vm:web1``. The row is
written in the same transaction as the task it belongs to and deleted in the same transaction that records
the task's end, so a client that sees the task finished can submit the next one at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kvmkit.errors import Conflict
from kvmkit.store.db import Store
from kvmkit.store.models import TaskLock


@dataclass(frozen=True)
class Holder:
    target: str
    holder: str  # task id, or sync-UUID for a change inside a request
    kind: str
    server: str


class Busy(Conflict):
    """Another task holds the object."""

    def __init__(self, target: str, task_id: str, kind: str, server: str | None = None) -> None:
        where = f" on server {server}" if server else ""
        super().__init__(f"{target} is busy with task {task_id} ({kind}){where}",
                         hint=f"wait for it (GET /api/v1/tasks/{task_id}) or cancel it, then retry")
        self.task_id = task_id
        self.server = server

    def to_dict(self) -> dict[str, str | None]:
        out = {**super().to_dict(), "task_id": self.task_id}
        if self.server:
            out["server"] = self.server
        return out


def holder_of(store: Store, target: str) -> Holder | None:
    with store.session() as s:
        row = s.get(TaskLock, target)
        return Holder(row.target, row.holder, row.kind, row.server) if row is not None else None


def busy(holder: Holder) -> Busy:
    return Busy(holder.target, holder.holder, holder.kind, holder.server)


def take(store: Store, target: str, holder: str, kind: str, server: str, *,
         also: Callable[[Session], None] | None = None, attempts: int = 5) -> None:
    """Hold ``target`` for ``holder`` (with ``also(session)`` written in the same transaction, e.g. the task
    row); Busy naming the current holder when another has it."""
    for _ in range(attempts):
        try:
            with store.session() as s:
                s.add(TaskLock(target=target, holder=holder, kind=kind[:64], server=server))
                s.flush()  # the hold first: what ``also`` writes (a task's created_at) is stamped once it is ours
                if also is not None:
                    also(s)
                    s.flush()
            return
        except IntegrityError:
            current = holder_of(store, target)
            if current is not None:
                raise busy(current) from None
            # released between our INSERT and our look: try again
    raise Conflict(f"{target} is being taken and released by other tasks too quickly to hold",
                   hint="retry in a moment")


def release(s: Session, holder: str) -> None:
    """Within the caller's transaction: drop every target ``holder`` has."""
    s.execute(delete(TaskLock).where(TaskLock.holder == holder))


def release_now(store: Store, target: str, holder: str) -> None:
    with store.session() as s:
        s.execute(delete(TaskLock).where(TaskLock.target == target, TaskLock.holder == holder))


@contextmanager
def held(store: Store, target: str, what: str, server: str, holder: str | None = None) -> Iterator[str]:
    """Hold ``target`` for a short synchronous change (``holder``: the task making it, if a task does; else
    a request, ``sync-UUID``); Busy when a task (on any server) has it."""
    mine = holder or f"sync-{uuid.uuid4()}"
    take(store, target, mine, what, server)
    try:
        yield mine
    finally:
        release_now(store, target, mine)


def targets_of(s: Session, holder: str) -> list[str]:
    return list(s.scalars(select(TaskLock.target).where(TaskLock.holder == holder)))
