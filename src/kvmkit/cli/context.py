"""Global CLI settings: ``--json`` and ``--connect URI`` are accepted anywhere on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field

from kvmkit.config import default_uri


@dataclass
class Settings:
    json: bool = False
    connect: str = field(default_factory=default_uri)


settings = Settings()


def reset() -> None:
    """Back to the defaults of a new process (the warm CLI server's children start from here)."""
    global _conn
    settings.json = False
    settings.connect = default_uri()
    _conn = None


def extract_globals(argv: list[str]) -> list[str]:
    """Pull ``--json`` and ``--connect URI`` (or ``--connect=URI``) out of argv; return the rest."""
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i:])
            break
        if arg == "--json":
            settings.json = True
        elif arg == "--connect" and i + 1 < len(argv):
            settings.connect = argv[i + 1]
            i += 1
        elif arg.startswith("--connect="):
            settings.connect = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return rest


def connection():  # -> libvirt.virConnect (lazy import keeps start-up lean)
    """The libvirt connection for this command (opened once per process)."""
    global _conn
    if _conn is None:
        from kvmkit.hypervisor.connection import connect

        _conn = connect(settings.connect)
    return _conn


_conn = None
