"""Templates: qcow2 volumes marked as the base of new VM disks.

The registry is a JSON file (``templates.json`` in kvmkit's data directory) for now; it moves into the
database (store/) once that exists. A new disk from a template is a linked clone by default: a qcow2
overlay whose backing file is the template (format given explicitly), so its cost does not depend on
the template's size. ``linked=False`` copies the template instead.
"""

from __future__ import annotations

import time
from typing import Any

import libvirt

from kvmkit.errors import Conflict, InvalidInput
from kvmkit.service.storage.template_registry import get_template, list_templates, locked, template_for_path, unmark
from kvmkit.service.storage.volumes import NAME_RE, clone_volume, get_pool, get_volume, volume_format

__all__ = ["get_template", "list_templates", "mark", "provision_from_template", "template_for_path", "unmark"]


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
    from kvmkit.service.storage.volumes import volume_users

    users = volume_users(conn, pool, vol, backing=False)
    if users:
        raise Conflict(f"volume '{volume}' is a disk of VM {', '.join(users)}; a template must not be written to",
                       hint="copy it (kvmkit volume clone POOL SRC NEW) and mark the copy")
    entry = {"name": name, "pool": pool, "volume": volume, "path": vol.path(), "format": fmt,
             "capacity": vol.info()[1], "description": description, "created": int(time.time())}
    with locked() as data:
        if name in data:
            raise Conflict(f"template '{name}' exists already", hint="choose another --name or unmark it first")
        for other in data.values():
            if other.get("path") == entry["path"]:
                raise Conflict(f"volume '{volume}' is already template '{other['name']}'")
        data[name] = entry
    return entry


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
