"""Revision 0005 (servers, task_locks, tasks.owner, one journal row per task and step) on SQLite and
PostgreSQL: a database at 0004 with a task in it upgrades keeping the task (no owner: the first server to
start takes it over), the new tables and columns match the models, the journal refuses a step number twice,
and it downgrades again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from kvmkit.store.models import Base
from tests.support.databases import migrate

pytestmark = pytest.mark.fast
MINE = {"servers", "task_locks", "tasks", "task_steps"}
STEP = "INSERT INTO task_steps (task_id, seq, name, at) VALUES ('t-old', 1, '{name}', CURRENT_TIMESTAMP)"


def _about_mine(diff: list) -> list:  # type: ignore[type-arg]
    """Differences that concern the tables of 0005 (other revisions have their own tests)."""
    def tables(item: object) -> set[str]:
        if isinstance(item, list):
            return set().union(*(tables(i) for i in item)) if item else set()
        found = set()
        for part in item if isinstance(item, tuple) else (item,):
            name = getattr(part, "name", None) if hasattr(part, "columns") else getattr(part, "table", None)
            name = getattr(name, "name", name)
            if isinstance(name, str):
                found.add(name)
            if isinstance(part, str) and part in MINE:
                found.add(part)
        return found
    return [d for d in diff if tables(d) & MINE]


def test_0005_upgrades_data_matches_the_models_and_downgrades(engine: Engine) -> None:
    migrate(engine, "upgrade", "0004")
    with engine.begin() as c:
        c.execute(text("INSERT INTO tasks (id, kind, target, state, percent, message, cancel_requested, created_at, "
                       "updated_at) VALUES ('t-old', 'vm.create', 'vm:web1', 'running', 10, 'define', false, "
                       "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        c.execute(text(STEP.format(name="create")))
    migrate(engine, "upgrade", "head")
    with engine.connect() as c:
        assert c.execute(text("SELECT id, state, owner FROM tasks")).all() == [("t-old", "running", None)]
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert _about_mine(diff) == [], diff
    insp = inspect(engine)
    assert {col["name"] for col in insp.get_columns("servers")} == {
        "id", "host", "pid", "proc_key", "version", "state", "started_at", "heartbeat_at", "reaped_by", "reaped_at"}
    assert {col["name"] for col in insp.get_columns("task_locks")} == {"target", "holder", "kind", "server", "since"}
    with pytest.raises(IntegrityError), engine.begin() as c:
        c.execute(text(STEP.format(name="again")))
    with pytest.raises(IntegrityError), engine.begin() as c:  # one holder per target
        for holder in ("t-a", "t-b"):
            c.execute(text("INSERT INTO task_locks (target, holder, kind, server, since) "
                           f"VALUES ('vm:web1', '{holder}', 'vm.start', 's1', CURRENT_TIMESTAMP)"))
    migrate(engine, "downgrade", "0004")
    insp = inspect(engine)
    assert not {"servers", "task_locks"} & set(insp.get_table_names())
    assert "owner" not in {col["name"] for col in insp.get_columns("tasks")}
    with engine.connect() as c:
        assert c.execute(text("SELECT id, state FROM tasks")).all() == [("t-old", "running")]
        assert c.execute(text("SELECT count(*) FROM task_steps")).scalar() == 1
    migrate(engine, "upgrade", "head")
