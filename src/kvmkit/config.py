"""Where kvmkit keeps its files and which libvirt it talks to by default."""

from __future__ import annotations

import os

TYPE_CHECKING = False  # not typing's: importing typing costs the CLI's lean paths a few ms
if TYPE_CHECKING:  # pathlib is imported when needed: the lean paths read only default_uri()
    from pathlib import Path

DEFAULT_URI = "qemu:///system"
DEFAULT_DATA_DIR = "/var/lib/kvmkit"


def default_uri() -> str:
    return os.environ.get("KVMKIT_CONNECT") or DEFAULT_URI


def data_dir() -> Path:
    """kvmkit's data directory (cached images, SQLite database, state records)."""
    from pathlib import Path

    path = Path(os.environ.get("KVMKIT_DATA_DIR") or DEFAULT_DATA_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    path = data_dir().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
