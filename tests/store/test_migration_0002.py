"""Revision 0002 (grants bound to the VM's UUID, console tickets) on SQLite and PostgreSQL: a database at
0001 with data upgrades keeping it, the result matches the models exactly, and it downgrades again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text

from kvmkit.store.db import MIGRATIONS, make_engine
from kvmkit.store.models import Base

pytestmark = pytest.mark.fast


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_cluster").new_database()
    else:
        url = f"sqlite:///{tmp_path}/kvmkit.db"
    eng = make_engine(url)
    yield eng
    eng.dispose()


def _migrate(engine: Engine, verb: str, rev: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        getattr(command, verb)(cfg, rev)


def test_0002_upgrades_data_matches_the_models_and_downgrades(engine: Engine) -> None:
    _migrate(engine, "upgrade", "0001")
    with engine.begin() as c:
        c.execute(text("INSERT INTO users (id, name, role, vm_scope, disabled, created_at) "
                       "VALUES (1, 'ann', 'operator', 'granted', false, CURRENT_TIMESTAMP)"))
        c.execute(text("INSERT INTO vm_grants (user_id, vm_name, created_at) VALUES (1, 'web1', CURRENT_TIMESTAMP)"))
    _migrate(engine, "upgrade", "head")
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() >= "0002"
        assert c.execute(text("SELECT vm_name, vm_uuid FROM vm_grants")).all() == [("web1", None)]  # by name
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == [], diff
    cols = {col["name"] for col in inspect(engine).get_columns("console_tickets")}
    assert cols >= {"ticket_hash", "user_id", "token_id", "vm_name", "vm_uuid", "kind", "view_only", "expires_at",
                    "used_at"}
    _migrate(engine, "downgrade", "0001")
    insp = inspect(engine)
    assert "console_tickets" not in insp.get_table_names()
    assert "vm_uuid" not in {col["name"] for col in insp.get_columns("vm_grants")}
    with engine.connect() as c:
        assert c.execute(text("SELECT vm_name FROM vm_grants")).all() == [("web1",)]
    _migrate(engine, "upgrade", "head")
