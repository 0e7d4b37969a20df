"""Inventory tests run on both engines (SQLite, the session's private PostgreSQL cluster)."""

from tests.api.conftest import pg_cluster  # noqa: F401
from tests.support.databases import db_url, store  # noqa: F401
