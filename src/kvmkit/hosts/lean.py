"""Does the inventory hold other hosts than the local one? Answered without SQLAlchemy, for the CLI's lean
``vm list`` path (kvmkit.cli.fastpath), which serves the local host alone and must step aside otherwise."""

from __future__ import annotations

import os

from kvmkit.hosts.record import LOCAL, HostRecord


def db_url() -> str:
    """The database the CLI uses: KVMKIT_DB, else the SQLite file in the data directory."""
    url = os.environ.get("KVMKIT_DB")
    if url:
        return url
    data = os.environ.get("KVMKIT_DATA_DIR") or "/var/lib/kvmkit"
    return f"sqlite:///{os.path.join(data, 'kvmkit.db')}"


def _sqlite_path(url: str) -> str | None:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if not path or path == ":memory:" else path


def read_hosts(local_uri: str, url: str | None = None) -> list[HostRecord] | None:
    """The inventory's records (local first) read from a SQLite file with the standard library; None when it
    cannot (another database: read it through the store)."""
    path = _sqlite_path(url or db_url())
    if path is None:
        return None
    local = HostRecord(LOCAL, local_uri)
    if not os.path.exists(path):
        return [local]
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = con.execute("SELECT name, uri, ssh_key, maintenance, max_memory_mib, cpu_overcommit FROM hosts "
                               "ORDER BY name").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return [local]
        return None
    except sqlite3.Error:
        return None
    others = []
    for name, uri, ssh_key, maintenance, max_mem, overcommit in rows:
        rec = HostRecord(name, local_uri if name == LOCAL else uri, ssh_key, bool(maintenance), max_mem, overcommit)
        if name == LOCAL:
            local = rec
        else:
            others.append(rec)
    return [local, *others]


def has_other_hosts(url: str | None = None) -> bool | None:
    """True/False for a SQLite inventory; None when it cannot tell cheaply (another database, unreadable)."""
    path = _sqlite_path(url or db_url())
    if path is None:
        return None
    if not os.path.exists(path):
        return False  # no database yet: no inventory
    import sqlite3

    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT count(*) FROM hosts WHERE name != 'local'").fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError as err:
        if "no such table" in str(err):
            return False  # a database from before the inventory
        return None
    except sqlite3.Error:
        return None
    return bool(row and row[0])
