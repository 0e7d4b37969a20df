"""The ``--db`` option shared by the commands that work on the server's database (user, token)."""

from __future__ import annotations

import typer

DB = typer.Option(None, "--db", envvar="KVMKIT_DB", help="database URL (default: SQLite in the data directory)")


def open_store(db: str | None):  # -> kvmkit.store.db.Store (imported lazily: SQLAlchemy is heavy)
    from kvmkit.store.db import Store

    return Store(db)
