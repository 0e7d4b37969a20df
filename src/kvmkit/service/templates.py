"""Templates: qcow2 volumes marked as the base of new VM disks.

The registry is a JSON file (``templates.json`` in kvmkit's data directory) for now; it moves into the
database (store/) once that exists. A new disk from a template is a linked clone by default: a qcow2
overlay whose backing file is the template (format given explicitly), so its cost does not depend on
the template's size. ``linked=False`` copies the template instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import libvirt

from kvmkit.config import data_dir
from kvmkit.errors import Conflict, InvalidInput, NotFound
from kvmkit.service.volumes import NAME_RE, clone_volume, get_pool, get_volume, volume_format


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
def _locked() -> Iterator[dict[str, dict[str, Any]]]:
    """The registry, locked for a read-modify-write; written back atomically on success."""
    lock = data_dir() / "templates.lock"
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        data = _read()
        yield data
        tmp = registry_path().with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, registry_path())


def mark(conn: libvirt.virConnect, pool: str, volume: str, *, name: str | None = None,
         description: str = "") -> dict[str, Any]:
    """Mark a qcow2 volume as template ``name`` (default: the volume's name)."""
    name = name or volume
    if not NAME_RE.match(name):
        raise InvalidInput(f"invalid template name {name!r}", hint="use letters, digits, '.', '_' and '-'")
    vol = get_volume(get_pool(conn, pool), volume)
    fmt = volume_format(vol)
    if fmt != "qcow2":
        raise InvalidInput(f"volume '{volume}' is {fmt}, a template must be qcow2",
                           hint=f"convert it first: kvmkit image convert {vol.path()} NEW.qcow2 --format qcow2")
    from kvmkit.service.volumes import volume_users

    users = volume_users(conn, pool, vol, backing=False)
    if users:
        raise Conflict(f"volume '{volume}' is a disk of VM {', '.join(users)}; a template must not be written to",
                       hint="copy it (kvmkit volume clone POOL SRC NEW) and mark the copy")
    entry = {"name": name, "pool": pool, "volume": volume, "path": vol.path(), "format": fmt,
             "capacity": vol.info()[1], "description": description, "created": int(time.time())}
    with _locked() as data:
        if name in data:
            raise Conflict(f"template '{name}' exists already", hint="choose another --name or unmark it first")
        for other in data.values():
            if other.get("path") == entry["path"]:
                raise Conflict(f"volume '{volume}' is already template '{other['name']}'")
        data[name] = entry
    return entry


def unmark(name: str) -> dict[str, Any]:
    with _locked() as data:
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


def provision_from_template(conn: libvirt.virConnect, template: str, volume_name: str, *,
                            pool: str | None = None, linked: bool = True) -> str:
    """Make a new disk from a template and return its path.

    linked: a qcow2 overlay backed by the template (must then be in the template's pool or any pool on the
    same host; the overlay names the template's path with backing format qcow2). Full: a copy.
    """
    entry = get_template(template)
    src_pool = entry["pool"]
    get_volume(get_pool(conn, src_pool), entry["volume"])  # still there?
    info = clone_volume(conn, src_pool, entry["volume"], volume_name, linked=linked, target_pool=pool)
    return str(info["path"])
