"""Global CLI settings: ``--json``, ``--connect URI``, ``--host NAME`` and ``--db URL`` are accepted anywhere
on the command line.

``--connect`` names the local host's libvirt (env KVMKIT_CONNECT, default qemu:///system). ``--host NAME``
picks a host of the inventory (``kvmkit host add``) instead: every command that works on a libvirt host
then works on that one, through :func:`connection`. ``--host local`` (or none) is the --connect host. The
inventory lives in the database (``--db`` / KVMKIT_DB, default SQLite in the data directory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from kvmkit.config import default_uri

LOCAL = "local"


@dataclass
class Settings:
    json: bool = False
    connect: str = field(default_factory=default_uri)
    host: str | None = None  # --host NAME (None: not given)
    connect_given: bool = False  # --connect on the command line (KVMKIT_CONNECT only sets the local URI)
    db: str | None = None  # --db URL given before or after the command (exported as KVMKIT_DB)


settings = Settings()


def reset() -> None:
    """Back to the defaults of a new process (the warm CLI server's children start from here)."""
    global _conn, _hosts
    settings.json = False
    settings.connect = default_uri()
    settings.host = None
    settings.connect_given = False
    settings.db = None
    _conn = None
    _hosts = None


_VALUED = {"--connect": "connect", "--host": "host"}


def extract_globals(argv: list[str]) -> list[str]:
    """Pull ``--json``, ``--connect URI``, ``--host NAME`` (also ``--opt=VALUE``) out of argv; return the rest.
    ``--db URL`` is recorded and left out too: :func:`apply_globals` hands it to the commands that take it."""
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        name, eq, value = arg.partition("=")
        if arg == "--json":
            settings.json = True
        elif name in (*_VALUED, "--db") and eq:
            _set(name, value)
        elif arg in (*_VALUED, "--db") and i + 1 < len(argv):
            _set(arg, argv[i + 1])
            i += 1
        else:
            rest.append(arg)
        i += 1
    return rest


def _set(flag: str, value: str) -> None:
    if flag == "--db":
        settings.db = value
    else:
        setattr(settings, _VALUED[flag], value)
        settings.connect_given = settings.connect_given or flag == "--connect"


def apply_globals() -> None:
    """In the process that runs the command: --db becomes KVMKIT_DB (every --db option reads it)."""
    if settings.db:
        os.environ["KVMKIT_DB"] = settings.db


def host_name() -> str:
    return settings.host or LOCAL


def host_given() -> bool:
    """True when the caller named a host (--host) or a libvirt URI (--connect on the command line): commands
    that span hosts (vm list) then work on that one only, and vm create places nothing."""
    return settings.host is not None or settings.connect_given


def hosts(*, store: bool = False):  # -> kvmkit.hosts.registry.Hosts (lazy imports keep start-up lean)
    """The inventory and a connection pool for this command. A SQLite inventory is read without SQLAlchemy;
    the database is opened for commands that change the inventory (``store``) or when it is not SQLite."""
    global _hosts
    if _hosts is None or (store and _hosts.store is None):
        from kvmkit.hosts.lean import read_hosts
        from kvmkit.hosts.pool import HostPool
        from kvmkit.hosts.registry import Hosts

        db = os.environ.get("KVMKIT_DB")
        if not store and read_hosts(settings.connect, db) is not None:
            _hosts = Hosts(None, HostPool(settings.connect), load=lambda: read_hosts(settings.connect, db) or [])
        else:
            from kvmkit.cli.db_option import open_store

            _hosts = Hosts(open_store(db), HostPool(settings.connect))
    return _hosts


def connection():  # -> libvirt.virConnect
    """The libvirt connection of the host this command works on (opened once per process)."""
    global _conn
    if _conn is None:
        if settings.host and settings.host != LOCAL:
            _conn = hosts().resolve(settings.host).get()
        else:
            from kvmkit.hypervisor.connection import connect

            _conn = connect(settings.connect)
    return _conn


_conn: Any = None
_hosts: Any = None
