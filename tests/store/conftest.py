"""Store tests share the API tests' private PostgreSQL cluster fixture and the two-engine fixtures."""

from tests.api.conftest import pg_cluster  # noqa: F401
from tests.support.databases import db_url, engine, store  # noqa: F401
