"""The servers on one database: each ``kvmkit serve`` registers a row (a new uuid per process), writes a
heartbeat every ``interval`` seconds, and finds the servers that have stopped.

A server counts as gone when its heartbeat is older than ``timeout`` seconds (by the database's clock, so
clocks of different machines do not matter), or at once when it ran on this machine and its process has
ended (same boot, same pid namespace, and no process with its pid and start time). Taking over a gone
server is a claim — ``UPDATE servers SET state='dead', reaped_by=ME WHERE id=IT AND state='up' AND
<still gone>`` — that exactly one server wins; the winner then fails and cleans up its tasks
(:mod:`kvmkit.service.tasks.reaper`).
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, select, text, update

from kvmkit.errors import InvalidInput
from kvmkit.store.db import Store
from kvmkit.store.models import Server

log = logging.getLogger("kvmkit.tasks")

DEFAULT_INTERVAL = 5.0
DEFAULT_TIMEOUT = 30.0
FORGET_AFTER = timedelta(days=30)  # rows of servers that stopped or died are kept this long (task errors name them)


def timing_from_env() -> tuple[float, float]:
    """(heartbeat interval, timeout) from KVMKIT_HEARTBEAT_S and KVMKIT_SERVER_TIMEOUT_S; InvalidInput when
    they make no sense (checked before the server starts serving)."""
    def number(var: str, default: float) -> float:
        raw = os.environ.get(var, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise InvalidInput(f"{var}={raw!r} is not a number of seconds",
                               hint=f"set {var} to e.g. {default:g}, or unset it") from None
        if not 0.05 <= value <= 3600:
            raise InvalidInput(f"{var}={raw} is out of range", hint="use between 0.05 and 3600 seconds")
        return value

    interval = number("KVMKIT_HEARTBEAT_S", DEFAULT_INTERVAL)
    timeout = number("KVMKIT_SERVER_TIMEOUT_S", max(DEFAULT_TIMEOUT, 3 * interval))
    if timeout < 2 * interval:
        raise InvalidInput(f"KVMKIT_SERVER_TIMEOUT_S={timeout:g} is shorter than two heartbeats "
                           f"(KVMKIT_HEARTBEAT_S={interval:g}): every server would look gone",
                           hint="make the timeout at least 3 times the heartbeat interval")
    return interval, timeout


def db_now(engine: Engine) -> datetime:
    """The database's clock (PostgreSQL), or this machine's (SQLite: one server, one machine)."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as c:
            value = c.execute(text("SELECT clock_timestamp()")).scalar_one()
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC)


def aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


# --- this process -----------------------------------------------------------------------------------------

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), '' if none."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    fields = stat.rsplit(")", 1)[-1].split()  # the command name may hold spaces and parentheses
    return fields[19] if len(fields) > 19 else ""


def _machine() -> str:
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = ""
    return f"{_read('/proc/sys/kernel/random/boot_id')}/{pidns}"


def proc_key(pid: int) -> str:
    return f"{_machine()}/{_start_time(pid)}"


def process_gone(row_host: str, row_key: str | None, pid: int) -> bool:
    """True when the server ran on this machine (same host name, boot and pid namespace) and its process has
    ended; False when it lives or we cannot tell (another machine)."""
    if not row_key or row_host != socket.gethostname():
        return False
    machine, _, started = row_key.rpartition("/")
    if machine != _machine() or not started:
        return False
    return _start_time(pid) != started


@dataclass(frozen=True)
class Peer:
    """A server row as another server sees it."""

    id: str
    host: str
    pid: int
    state: str
    heartbeat_at: datetime
    age: float  # seconds since its last heartbeat, by the database's clock
    gone: str | None  # why it counts as gone, or None

    def describe(self) -> str:
        return f"server {self.id} on {self.host}, pid {self.pid}"


class Membership:
    """This server's row: register, beat, find the gone ones, claim one, sign off."""

    def __init__(self, store: Store, *, interval: float = DEFAULT_INTERVAL, timeout: float = DEFAULT_TIMEOUT,
                 server_id: str | None = None) -> None:
        self.store = store
        self.interval, self.timeout = interval, timeout
        self.id = server_id or str(uuid.uuid4())
        self.host = os.environ.get("KVMKIT_SERVER_HOST") or socket.gethostname()

    def register(self) -> None:
        from kvmkit import __version__

        now = db_now(self.store.engine)
        pid = os.getpid()
        with self.store.session() as s:
            s.add(Server(id=self.id, host=self.host, pid=pid, proc_key=proc_key(pid), version=__version__[:32],
                         state="up", started_at=now, heartbeat_at=now))
            s.execute(delete(Server).where(Server.state.in_(("stopped", "dead")),
                                           Server.heartbeat_at < now - FORGET_AFTER))

    def reregister(self) -> str:
        """Taken for gone by another server (a pause longer than the timeout): carry on under a new id (the
        tasks of the old one were taken over and stop at their next step)."""
        old = self.id
        self.id = str(uuid.uuid4())
        self.register()
        log.error("server %s was taken for stopped by another server (no heartbeat for %.0f s); its tasks were "
                  "failed and cleaned up there; going on as server %s", old, self.timeout, self.id)
        return self.id

    def beat(self) -> bool:
        """Write the heartbeat; False when our row is no longer up (another server took us for gone)."""
        with self.store.session() as s:
            done = s.execute(update(Server).where(Server.id == self.id, Server.state == "up")
                             .values(heartbeat_at=self._now_sql()))
            return bool(getattr(done, "rowcount", 0))

    def _now_sql(self) -> Any:
        from sqlalchemy import func

        if self.store.engine.dialect.name == "postgresql":
            return func.clock_timestamp()
        return datetime.now(UTC)

    def peers(self) -> list[Peer]:
        """Every other server that is up, with its heartbeat age and whether it counts as gone."""
        now = db_now(self.store.engine)
        with self.store.session() as s:
            rows = list(s.scalars(select(Server).where(Server.state == "up", Server.id != self.id)))
        out = []
        for r in rows:
            hb = aware(r.heartbeat_at)
            age = (now - hb).total_seconds()
            gone = None
            if process_gone(r.host, r.proc_key, r.pid):
                gone = "its process has ended"
            elif age > self.timeout:
                gone = f"no heartbeat for {age:.1f} s (timeout {self.timeout:g} s)"
            out.append(Peer(r.id, r.host, r.pid, r.state, hb, age, gone))
        return out

    def claim(self, peer: Peer) -> bool:
        """Mark ``peer`` dead with us as its reaper; True for exactly one server. The condition is checked
        again in the UPDATE: a peer that has beaten since (or was claimed by another) is not taken."""
        now = db_now(self.store.engine)
        cond = [Server.id == peer.id, Server.state == "up"]
        if not (peer.gone or "").startswith("its process"):  # a process that has ended cannot beat again
            cond.append(Server.heartbeat_at < now - timedelta(seconds=self.timeout))
        with self.store.session() as s:
            done = s.execute(update(Server).where(*cond).values(state="dead", reaped_by=self.id, reaped_at=now))
            return bool(getattr(done, "rowcount", 0))

    def sign_off(self) -> None:
        """A clean stop: the row says stopped (nothing of ours is left to take over)."""
        with self.store.session() as s:
            s.execute(update(Server).where(Server.id == self.id, Server.state == "up").values(state="stopped"))


def listing(store: Store, me: str | None = None) -> list[dict[str, Any]]:
    """Every server row, newest first, with its heartbeat's age (for GET /api/v1/servers)."""
    now = db_now(store.engine)
    with store.session() as s:
        rows = list(s.scalars(select(Server).order_by(Server.started_at.desc()).limit(200)))
    out = []
    for r in rows:
        hb = aware(r.heartbeat_at)
        out.append({"id": r.id, "host": r.host, "pid": r.pid, "version": r.version, "state": r.state,
                    "started_at": aware(r.started_at).isoformat(), "heartbeat_at": hb.isoformat(),
                    "heartbeat_age_s": round(max(0.0, (now - hb).total_seconds()), 3),
                    "reaped_by": r.reaped_by, "reaped_at": aware(r.reaped_at).isoformat() if r.reaped_at else None,
                    "this": r.id == me})
    return out
