"""Taking over after a server that stopped: fail its tasks, clean up after them, free what they held.

A task is an orphan when it is queued or running and its owner is not a server that is up (the owner was
claimed dead — :meth:`Membership.claim`, exactly one server wins that —, shut down, or is unknown: a task
written before servers were recorded). Every server looks for orphans at start-up and on every watchdog
tick; adopting one is a conditional UPDATE (``owner = ME WHERE id = T AND owner = DEAD AND state IN
(queued, running)``), so exactly one server cleans up after each task even when several look at once, and
a server that adopted a task and then stopped itself leaves it an orphan again for the next one (clean-up
handlers are idempotent: they look at what libvirt has). Once adopted, the task's holds are the adopter's
until the clean-up has run (the object stays busy meanwhile), then the task is failed with what was done.
A clean-up that needs libvirt waits while libvirt (the task's host: the local one, or another host of the
inventory) is unreachable: the task stays running, saying which host it waits for. A task whose host has
left the inventory is failed at once, saying that nothing was cleaned up there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, or_, select, text, update

from kvmkit.errors import NotFound
from kvmkit.service.tasks.rows import ACTIVE, task_dict
from kvmkit.store.models import Server, Task, TaskLock, TaskStep

if TYPE_CHECKING:
    from kvmkit.service.tasks.runner import TaskRunner

log = logging.getLogger("kvmkit.tasks")
Handler = Callable[[Any, dict[str, Any], list[dict[str, Any]]], list[str]]


class Reaper:
    def __init__(self, runner: TaskRunner, handlers: dict[str, Handler]) -> None:
        self.runner, self.handlers = runner, handlers
        self._adopted: dict[str, dict[str, Any]] = {}  # task id -> what the clean-up needs
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._why: dict[str, str] = {}  # server id -> why it was taken for gone (by this server)
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvmkit-recovery")

    # --- finding and adopting orphans -------------------------------------------------------------------
    def claim_gone(self) -> list[str]:
        """Claim every server that counts as gone (exactly one server wins each); their ids."""
        members = self.runner.members
        won = []
        for peer in members.peers():
            if peer.gone and members.claim(peer):
                self._why[peer.id] = peer.gone
                won.append(peer.id)
                log.warning("%s stopped (%s; last heartbeat %s): taking over its tasks", peer.describe(),
                            peer.gone, peer.heartbeat_at.isoformat())
        return won

    def adopt(self) -> list[str]:
        """Adopt every orphan task (exactly once across servers); the ids this server adopted."""
        store, me = self.runner.store, self.runner.server_id
        up = select(Server.id).where(Server.state == "up")
        with store.session() as s:
            orphans = [(t.id, t.owner) for t in s.scalars(select(Task).where(
                Task.state.in_(ACTIVE), or_(Task.owner.is_(None), Task.owner.not_in(up))))]
        mine = []
        for task_id, owner in orphans:
            if task_id in self._adopted:
                continue
            try:
                info = self._adopt_one(task_id, owner, me)
            except Exception as err:  # e.g. a lock timeout behind a paused server's transaction: next tick
                log.warning("could not take over task %s yet: %s", task_id, err)
                continue
            if info is not None:
                with self._lock:
                    self._adopted[task_id] = info
                mine.append(task_id)
        self._sweep_holds()
        return mine

    def _adopt_one(self, task_id: str, owner: str | None, me: str) -> dict[str, Any] | None:
        store = self.runner.store
        with store.session() as s:
            if store.engine.dialect.name == "postgresql":
                s.execute(text("SET LOCAL lock_timeout = '5s'"))
            who = self._who(s, owner)
            done = s.execute(update(Task).where(
                Task.id == task_id, Task.state.in_(ACTIVE),
                Task.owner.is_(None) if owner is None else Task.owner == owner,
            ).values(owner=me, message=f"cleaning up: {who}", updated_at=datetime.now(UTC)))
            if not getattr(done, "rowcount", 0):
                return None  # another server adopted it, or it ended
            s.execute(update(TaskLock).where(TaskLock.holder == task_id).values(server=me))
            t = s.get(Task, task_id)
            if t is None:
                return None
            task = task_dict(t) | {"intent": t.intent}
            steps = [{"seq": r.seq, "name": r.name, "data": r.data}
                     for r in s.scalars(select(TaskStep).where(TaskStep.task_id == task_id).order_by(TaskStep.seq))]
        return {"task": task, "steps": steps, "who": who}

    def _who(self, s: Any, owner: str | None) -> str:
        me = self.runner.server_id
        if owner is None:
            return f"no server was recorded for it (written before servers were recorded); taken over by server {me}"
        row = s.get(Server, owner)
        if row is None:
            return f"server {owner}, no longer on record; taken over by server {me}"
        hb = row.heartbeat_at if row.heartbeat_at.tzinfo else row.heartbeat_at.replace(tzinfo=UTC)
        if row.state == "stopped":
            why = "it shut down"
        else:
            why = self._why.get(owner) or (f"taken for stopped by server {row.reaped_by}" if row.reaped_by
                                           else "stopped")
        return (f"server {owner} on {row.host}, pid {row.pid}, stopped while the task ran: {why}; last heartbeat "
                f"{hb.isoformat(timespec='milliseconds')}; taken over by server {me}")

    def _sweep_holds(self) -> None:
        """Holds of requests on servers that are not up, and holds of tasks that have ended, go."""
        up = select(Server.id).where(Server.state == "up")
        active = select(Task.id).where(Task.state.in_(ACTIVE))
        with self.runner.store.session() as s:
            s.execute(delete(TaskLock).where(TaskLock.holder.like("sync-%"), TaskLock.server.not_in(up)))
            s.execute(delete(TaskLock).where(TaskLock.holder.not_like("sync-%"), TaskLock.holder.not_in(active)))

    # --- cleaning up ------------------------------------------------------------------------------------
    def recover(self, task_id: str, conn_get: Callable[[], Any]) -> dict[str, Any] | None:
        """Run the clean-up of an adopted task and fail it; None when it must wait for libvirt."""
        with self._lock:
            info = self._adopted.get(task_id)
        if info is None:
            return None
        task, steps = info["task"], info["steps"]
        last = steps[-1]["name"] if steps else "before its first step"
        handler = self.handlers.get(task["kind"])
        report: list[str] = []
        if handler is not None:
            host = (task.get("intent") or {}).get("host")
            where = "libvirt"
            if host and host != "local":  # it ran on another host: clean up there, never on this server's libvirt
                host_conn = self.runner.host_conn
                conn_get = (lambda: host_conn(host)) if host_conn is not None else (lambda: None)
                where = f"host '{host}'"
            gone = None
            try:
                conn = conn_get()
            except NotFound as err:  # the host left the inventory: no clean-up through kvmkit can reach it
                conn, gone = None, err.message
            except Exception as err:
                conn = None
                log.debug("%s unreachable for the clean-up of task %s: %s", where, task_id, err)
            if gone is not None:
                report = [f"not cleaned up: {gone}; inspect {task['target']} on host '{host}' by hand"]
            elif conn is None:
                self._waiting(task_id, where)
                return None
            else:
                try:
                    report = handler(conn, task, steps)
                except Exception as err:
                    log.exception("recovery of task %s failed", task_id)
                    report = [f"clean-up failed: {err}; inspect {task['target']} by hand"]
        reason = f"interrupted: the server stopped while the task was at step '{last}' ({info['who']})"
        if report:
            reason += "; clean-up: " + "; ".join(report)
        final = self.runner._finish(task_id, "failed", owner=self.runner.server_id, error=reason,
                                    result={"recovery": report})
        with self._lock:
            self._adopted.pop(task_id, None)
        if final is not None:
            self.runner.publish_dict(final, task_id)
            log.warning("task %s (%s %s) %s", task_id, task["kind"], task["target"], reason)
        return {"id": task_id, "kind": task["kind"], "target": task["target"], "error": reason}

    def _waiting(self, task_id: str, where: str = "libvirt") -> None:
        msg = f"waiting for {where} to answer, to clean up after the server that stopped"
        with self.runner.store.session() as s:
            s.execute(update(Task).where(Task.id == task_id, Task.owner == self.runner.server_id,
                                         Task.message != msg).values(message=msg, updated_at=datetime.now(UTC)))

    def at_start(self, conn: Any) -> list[dict[str, Any]]:
        """Claim gone servers, adopt orphans and clean up now (before the server serves)."""
        self.claim_gone()
        out = []
        for task_id in self.adopt():
            done = self.recover(task_id, lambda: conn)
            if done is not None:
                out.append(done)
        return out

    def tick(self, conn_get: Callable[[], Any]) -> None:
        """One watchdog round: claim, adopt, and hand the clean-ups (new and waiting) to the recovery thread."""
        self.claim_gone()
        self.adopt()
        with self._lock:
            todo = [t for t in self._adopted if t not in self._running]
            self._running.update(todo)
        for task_id in todo:
            self._work.submit(self._recover_job, task_id, conn_get)

    def _recover_job(self, task_id: str, conn_get: Callable[[], Any]) -> None:
        try:
            self.recover(task_id, conn_get)
        except Exception:
            log.exception("clean-up of task %s failed", task_id)
        finally:
            with self._lock:
                self._running.discard(task_id)

    def never_started(self, ids: set[str]) -> list[dict[str, Any]]:
        """At a clean stop: fail this server's tasks that were still queued (never started)."""
        self._work.shutdown(wait=True, cancel_futures=True)
        with self.runner.store.session() as s:
            rows = [(t.id, t.owner) for t in s.scalars(select(Task).where(Task.state == "queued",
                                                                        Task.owner.in_(sorted(ids))))]
        out = []
        for task_id, owner in rows:
            if task_id in self._adopted:
                continue  # another server's task waiting for its clean-up: the next server does it
            d = self.runner._finish(task_id, "failed", owner=owner,
                                    error="interrupted: the server stopped while the task was at step 'before its "
                                          f"first step' (server {owner} shut down before it started the task; "
                                          "nothing was done)")
            if d is not None:
                out.append(d)
        return out


class Watchdog:
    """A thread: the heartbeat, then a reaper round, every ``membership.interval`` seconds."""

    def __init__(self, runner: TaskRunner, conn_get: Callable[[], Any]) -> None:
        self.runner, self.conn_get = runner, conn_get
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvmkit-heartbeat", daemon=True)

    def start(self) -> Watchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        members = self.runner.members
        while not self._stop.wait(members.interval):
            try:
                if not members.beat():
                    self.runner.rejoin()
                self.runner.reaper.tick(self.conn_get)
            except Exception as err:  # the database may be unreachable for a while: keep trying
                log.warning("heartbeat of server %s failed: %s", members.id, err)
