"""Engine, sessions and schema upgrades (Alembic ``upgrade head`` run in-process at server start)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from kvmkit.errors import HostError, InvalidInput

MIGRATIONS = Path(__file__).with_name("migrations")
MIGRATION_LOCK = 0x6B766D6B  # "kvmk": the advisory lock held while a server upgrades the schema


def default_url() -> str:
    from kvmkit.config import data_dir

    return f"sqlite:///{data_dir() / 'kvmkit.db'}"


def make_engine(url: str | None = None) -> Engine:
    """An engine for ``url`` (default: SQLite file in the data directory; postgresql+psycopg://... too)."""
    url = url or default_url()
    if not url.startswith(("sqlite", "postgresql")):
        raise InvalidInput(f"unsupported database URL '{url}'",
                           hint="use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    if url.startswith("sqlite"):
        private_sqlite_files(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def private_sqlite_files(url: str) -> None:
    """The SQLite file holds password hashes, token hashes and the audit log: create it 0600 (SQLite gives
    its -wal and -shm files the database file's mode) and make existing ones 0600."""
    import os

    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        for p in (path, path + "-wal", path + "-shm", path + "-journal"):
            if os.path.exists(p) and os.stat(p).st_mode & 0o077:
                os.chmod(p, 0o600)
    except OSError:
        pass  # a directory we may not write: SQLite reports that itself, with the path


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":  # servers starting together on one database: one at a time
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
    except Exception as err:
        raise HostError(f"cannot migrate the database {engine.url.render_as_string(hide_password=True)}: {err}",
                        hint="check the --db URL, that the server is running and the user may create tables") from err


def check(engine: Engine) -> None:
    with engine.connect() as c:
        c.execute(text("SELECT 1"))


class Store:
    """The engine plus a session factory; one per process."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.engine = make_engine(url)
        if migrate:
            upgrade(self.engine)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success, rolled back on error."""
        s = self._factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()
