"""Both database engines for store-level tests: ``db_url`` (a new SQLite file or a new database in the
test session's private PostgreSQL cluster), ``store`` and ``engine`` over it, and ``migrate`` (alembic
upgrade/downgrade to a revision on an engine, as kvmkit's Store does at start)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from kvmkit.store.db import MIGRATIONS, Store, make_engine


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_cluster").new_database())
    return f"sqlite:///{tmp_path}/kvmkit.db"


@pytest.fixture()
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.engine.dispose()


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def migrate(engine: Engine, verb: str, rev: str) -> None:
    """``verb`` ('upgrade' or 'downgrade') the database of ``engine`` to revision ``rev``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        getattr(command, verb)(cfg, rev)
