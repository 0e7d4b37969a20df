"""Revision 0002 (grants bound to the VM's UUID, console tickets) on SQLite and PostgreSQL: a database at
0001 with data upgrades keeping it, the result matches the models exactly, and it downgrades again."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from kvmkit.store.models import Base
from tests.support.databases import migrate

pytestmark = pytest.mark.fast


def test_0002_upgrades_data_matches_the_models_and_downgrades(engine: Engine) -> None:
    migrate(engine, "upgrade", "0001")
    with engine.begin() as c:
        c.execute(text("INSERT INTO users (id, name, role, vm_scope, disabled, created_at) "
                       "VALUES (1, 'ann', 'operator', 'granted', false, CURRENT_TIMESTAMP)"))
        c.execute(text("INSERT INTO vm_grants (user_id, vm_name, created_at) VALUES (1, 'web1', CURRENT_TIMESTAMP)"))
    migrate(engine, "upgrade", "head")
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() >= "0002"
        assert c.execute(text("SELECT vm_name, vm_uuid FROM vm_grants")).all() == [("web1", None)]  # by name
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == [], diff
    cols = {col["name"] for col in inspect(engine).get_columns("console_tickets")}
    assert cols >= {"ticket_hash", "user_id", "token_id", "vm_name", "vm_uuid", "kind", "view_only", "expires_at",
                    "used_at"}
    migrate(engine, "downgrade", "0001")
    insp = inspect(engine)
    assert "console_tickets" not in insp.get_table_names()
    assert "vm_uuid" not in {col["name"] for col in insp.get_columns("vm_grants")}
    with engine.connect() as c:
        assert c.execute(text("SELECT vm_name FROM vm_grants")).all() == [("web1",)]
    migrate(engine, "upgrade", "head")
