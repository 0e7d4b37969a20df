"""SQLAlchemy 2 models. Change them only together with a new Alembic revision in migrations/versions/."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer | operator | admin
    # "all": the role applies to every VM; "granted": only VMs granted to the user or one of its groups
    vm_scope: Mapped[str] = mapped_column(String(16), default="all")
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    tokens: Mapped[list[Token]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class GroupMember(Base):
    __tablename__ = "group_members"
    __table_args__ = (UniqueConstraint("group_id", "user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))


class VMGrant(Base):
    """A VM delegated to a user or a group (exactly one of user_id/group_id is set). Bound to the VM's UUID:
    a grant applies only while the VM of that name has that UUID (``vm_uuid`` NULL: a grant made before
    revision 0002, bound by name alone)."""

    __tablename__ = "vm_grants"
    __table_args__ = (UniqueConstraint("user_id", "group_id", "vm_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=True)
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"), nullable=True)
    vm_name: Mapped[str] = mapped_column(String(64))
    vm_uuid: Mapped[str | None] = mapped_column(String(36), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ConsoleTicket(Base):
    """A short-lived single-use ticket that opens one console of one VM (the sha256 of its secret only).
    Kept in the database so that any server on the same database can take it, exactly once."""

    __tablename__ = "console_tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id", ondelete="CASCADE"), nullable=True)
    vm_name: Mapped[str] = mapped_column(String(64))
    vm_uuid: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(16))  # serial | vnc
    view_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Token(Base):
    """An API token or a portal session. Only the sha256 of the secret is stored."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16), default="api")  # api | session
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    user: Mapped[User] = relationship(back_populates="tokens")


class Task(Base):
    """A long operation. ``intent`` is written before the task acts; each step is journalled in task_steps."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # vm.create, vm.start, ...
    target: Mapped[str] = mapped_column(String(128))  # "vm:NAME"
    # queued running succeeded failed cancelled
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    percent: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    intent: Mapped[Any] = mapped_column(JSON, nullable=True)
    user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # the server (servers.id) running it: the one that accepted it, or the one that took it over to clean up
    # after that one stopped. NULL: written before revision 0005.
    owner: Mapped[str | None] = mapped_column(String(36), nullable=True, index=True)


class TaskStep(Base):
    __tablename__ = "task_steps"
    __table_args__ = (Index("uq_task_steps_task_seq", "task_id", "seq", unique=True),)  # one row per step number

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    data: Mapped[Any] = mapped_column(JSON, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TaskLock(Base):
    """An object (``target``: vm:NAME, pool:NAME, host ...) held by one task or one short change, for every
    server on the database: the primary key makes taking it atomic. ``holder`` is the task id (or
    ``sync-UUID`` for a change made inside a request); ``server`` the server holding it."""

    __tablename__ = "task_locks"

    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(64))
    server: Mapped[str] = mapped_column(String(36), index=True)
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Server(Base):
    """A ``kvmkit serve`` process on this database. It writes ``heartbeat_at`` (the database's clock) every
    few seconds; ``state`` is up, stopped (shut down cleanly) or dead (another server, ``reaped_by``, found
    it gone and took over its tasks). ``proc_key`` (boot id, pid namespace, process start time) lets a
    server on the same machine tell at once that the process has ended."""

    __tablename__ = "servers"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    proc_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16), default="up", index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reaped_by: Mapped[str | None] = mapped_column(String(36), nullable=True)
    reaped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    user: Mapped[str | None] = mapped_column(String(64), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(128))
    result: Mapped[str] = mapped_column(String(16))  # ok | failed | denied | accepted
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    source_ip: Mapped[str | None] = mapped_column(String(64), nullable=True)


class MetricSeries(Base):
    """One charted object: a VM (``kind='vm'``, its name) or a host (``kind='host'``, its name) on a host.

    Points refer to it by number, so a name is stored once, not in every sample."""

    __tablename__ = "metric_series"
    __table_args__ = (UniqueConstraint("kind", "name", "host"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # vm | host
    host: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))


class MetricPoint(Base):
    """One sample of a series: ``step`` 0 = a raw sample (every sampling interval, kept 24 h), 300 = a 5-minute
    roll-up of them (kept 30 days). Integers keep rows small: CPU in hundredths of a percent, memory in KiB,
    rates in bytes per second. Host-only columns (ksm_saved_kib, vms_running) are NULL for VMs."""

    __tablename__ = "metric_points"
    __table_args__ = (PrimaryKeyConstraint("series_id", "step", "ts"), {"sqlite_with_rowid": False})

    series_id: Mapped[int] = mapped_column(ForeignKey("metric_series.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(SmallInteger)
    ts: Mapped[int] = mapped_column(BigInteger)  # seconds since the epoch (UTC); a roll-up: its bucket's start
    cpu: Mapped[int | None] = mapped_column(Integer, nullable=True)  # percent x 100 (average)
    cpu_max: Mapped[int | None] = mapped_column(Integer, nullable=True)  # roll-ups: the highest raw sample
    mem_used_kib: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    mem_total_kib: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    disk_rd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # bytes/s
    disk_wr: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    net_rx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    net_tx: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    ksm_saved_kib: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    vms_running: Mapped[int | None] = mapped_column(Integer, nullable=True)


class MetricLease(Base):
    """Which server samples a host (several servers may share one database): the owner renews it every
    interval; another server takes it over once it expired. ``rolled_until``: roll-ups are made up to here."""

    __tablename__ = "metric_leases"

    host: Mapped[str] = mapped_column(String(255), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[int] = mapped_column(BigInteger)  # seconds since the epoch
    rolled_until: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    interval: Mapped[int | None] = mapped_column(Integer, nullable=True)  # seconds


class Host(Base):
    """A libvirt host in the inventory (``kvmkit host add``). The local host needs no row: it is implicit
    (name ``local``, the URI of --connect); a row named ``local`` only holds its settings (uri empty)."""

    __tablename__ = "hosts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    uri: Mapped[str] = mapped_column(String(1024), default="")
    ssh_key: Mapped[str | None] = mapped_column(String(1024), nullable=True)  # qemu+ssh: the key file to use
    maintenance: Mapped[bool] = mapped_column(Boolean, default=False)
    max_memory_mib: Mapped[int | None] = mapped_column(Integer, nullable=True)  # memory VMs may use (cap)
    cpu_overcommit: Mapped[float | None] = mapped_column(Float, nullable=True)  # vCPUs per physical core
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
