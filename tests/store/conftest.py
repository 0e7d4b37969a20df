"""Store tests share the API tests' private PostgreSQL cluster fixture."""

from tests.api.conftest import pg_cluster  # noqa: F401
