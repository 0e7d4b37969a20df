"""What kvmkit remembers about volumes that libvirt has no place for, keyed by the volume's path:

- ``incomplete``: an upload into an existing volume stopped in the middle (cut off, cancelled, wrong
  sha256): the volume holds part of the new image over the old one. Shown by ``volume info``/``list``;
  cleared by a complete upload, a wipe or the volume's deletion.
- ``owner``: the API user who created the volume (create, clone, upload, provision, convert), so an
  operator may delete, wipe and resize its own volumes (docs/api.md, "Storage roles").

A JSON file (``volumes.json`` in kvmkit's data directory) written atomically under a file lock, like the
template registry; it moves into the database with it. On the server's own host each entry also names the
file (a tag in an extended attribute, see :func:`_tag`), so a volume deleted and made again at the same path
outside kvmkit does not inherit the old one's owner or mark.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kvmkit.config import data_dir


def _path() -> Path:
    return data_dir() / "volumes.json"


def _read() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_path().read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def _locked() -> Iterator[dict[str, dict[str, Any]]]:
    base = data_dir()
    base.mkdir(parents=True, exist_ok=True)
    with (base / "volumes.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        data = _read()
        yield data
        for path in [p for p, entry in data.items() if entry.get("file") is not None and not os.path.lexists(p)]:
            del data[path]  # a file of this host that is gone (deleted by virsh, say): nothing to remember
        tmp = _path().with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, _path())


_TAG = "user.kvmkit.volume"  # an extended attribute naming the file kvmkit marked


def _tag(path: str, *, create: bool = False) -> str | list[int] | None:
    """What identifies the file at ``path`` on this host: a random tag kept in an extended attribute of
    the file (made when ``create``), or its (device, inode) where the file system has no user xattrs;
    None when there is no such file here (a remote host's volume). A volume deleted and made again at
    the same path outside kvmkit (virsh) is another file without the tag (file systems reuse inode
    numbers at once, so the inode alone cannot tell), and what was remembered about the old one is void."""
    try:
        return os.getxattr(path, _TAG).decode()
    except OSError as err:
        if err.errno == errno.ENOENT:
            return None
        if err.errno == errno.ENODATA and create:
            tag = secrets.token_hex(8)
            try:
                os.setxattr(path, _TAG, tag.encode())
                return tag
            except OSError:
                pass
        elif err.errno == errno.ENODATA:
            return ""  # a file without the tag
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_dev, st.st_ino]


def _valid(path: str, entry: dict[str, Any] | None) -> dict[str, Any]:
    if not entry:
        return {}
    tag = entry.get("file")
    if tag is not None:
        current = _tag(path)
        if current is not None and current != tag:
            return {}
    return {k: v for k, v in entry.items() if k != "file"}


def marks(path: str) -> dict[str, Any]:
    """Everything remembered about the volume at ``path`` ({} when nothing)."""
    return _valid(path, _read().get(path))


def all_marks() -> dict[str, dict[str, Any]]:
    return {path: valid for path, entry in _read().items() if (valid := _valid(path, entry))}


def set_mark(path: str, **fields: Any) -> None:
    with _locked() as data:
        entry = _valid(path, data.get(path))  # a new file at that path: the old one's marks are void
        tag = _tag(path, create=True)
        entry.update(fields)
        if tag is not None:
            entry["file"] = tag
        data[path] = entry


def clear(path: str, *fields: str) -> None:
    """Forget ``fields`` of the volume at ``path`` (all of them when none are named)."""
    if path not in _read():
        return
    with _locked() as data:
        entry = data.get(path)
        if entry is None:
            return
        for name in fields or tuple(entry):
            entry.pop(name, None)
        if not entry:
            del data[path]
