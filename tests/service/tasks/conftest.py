"""Task tests run on SQLite and on the API tests' private PostgreSQL cluster (several servers share one)."""

from tests.api.conftest import pg_cluster  # noqa: F401
