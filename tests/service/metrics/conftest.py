"""Metrics tests run the history on SQLite and on the API tests' private PostgreSQL cluster."""

from tests.api.conftest import pg_cluster  # noqa: F401
