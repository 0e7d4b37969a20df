"""The template registry: which volumes are templates (a JSON file in kvmkit's data directory, locked for
every read-modify-write). Reading it needs no volume code, so volumes.py can ask whether a path is a template."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvmkit.config import data_dir
from kvmkit.errors import NotFound


def registry_path() -> Path:
    return data_dir() / "templates.json"


def _read() -> dict[str, dict[str, Any]]:
    path = registry_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text() or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def locked() -> Iterator[dict[str, dict[str, Any]]]:
    """The registry, locked for a read-modify-write; written back atomically on success."""
    lock = data_dir() / "templates.lock"
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        data = _read()
        yield data
        tmp = registry_path().with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, registry_path())


def unmark(name: str) -> dict[str, Any]:
    with locked() as data:
        if name not in data:
            raise NotFound(f"template '{name}' not found", hint="list them with `kvmkit template list`")
        entry = data.pop(name)
    return {**entry, "unmarked": True}


def list_templates() -> list[dict[str, Any]]:
    return [v for _k, v in sorted(_read().items())]


def get_template(name: str) -> dict[str, Any]:
    data = _read()
    if name not in data:
        raise NotFound(f"template '{name}' not found", hint="list them with `kvmkit template list`")
    return data[name]


def template_for_path(path: str) -> str | None:
    for name, entry in _read().items():
        if entry.get("path") == path:
            return name
    return None
