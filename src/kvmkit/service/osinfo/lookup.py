"""Finding an OS by the name a user types, listing and describing what is known.

``find("debian12")`` is an exact short id (or an osinfo id URL). A name that is not known but looks like a
release of a known series (``fedora41``, ``ubuntu26.04``, ``win12``) falls back to the nearest known
release of that series, with a warning naming it: the newest one below, else the oldest one above. A
bare major version whose releases are known by minor version (``rhel9`` -> ``rhel9.1``) picks the newest
of them, with a note rather than a warning.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from kvmkit.errors import InvalidInput, NotFound
from kvmkit.service.osinfo.db import Database, OsEntry, load

_SERIES = re.compile(r"^(?P<prefix>[a-z][a-z-]*?)(?P<version>\d+(?:\.\d+)*)$")
ALIASES = {"windows": "win"}   # windows11 -> win11
SOURCES = {"system": "system osinfo-db", "kvmkit": "kvmkit overlay", "local": "local osinfo (/etc/osinfo)",
           "user": "user osinfo (~/.config/osinfo)"}


@dataclass(frozen=True)
class Match:
    entry: OsEntry
    requested: str
    fallback: bool            # not the requested release: the nearest known one (warning says so)
    message: str | None       # the warning or note to show


def _series(short_id: str) -> tuple[str, tuple[int, ...]] | None:
    m = _SERIES.match(short_id.lower())
    if not m:
        return None
    prefix = m.group("prefix")
    prefix = ALIASES.get(prefix, prefix)
    return prefix, tuple(int(p) for p in m.group("version").split("."))


def find(name: str, db: Database | None = None) -> Match:
    """The entry for ``name`` (short id or osinfo id), or the nearest release of its series; NotFound else."""
    db = db or load()
    entry = db.get(name) if "://" in name else db.by_short_id(name)
    if entry is not None:
        return Match(entry, name, False, None)
    if "://" in name:
        raise NotFound(f"OS id {name} is not in the osinfo database",
                       hint="see `kvmkit os list`; give a short id such as debian12 or win11")
    wanted = _series(name)
    if wanted is not None:
        prefix, version = wanted
        known = [(v, db.entries[os_id]) for sid, os_id in db.short.items()
                 if (s := _series(sid)) is not None and s[0] == prefix and sid == sid.lower()
                 for v in [s[1]]]
        if known:
            return _nearest(name, version, known)
    raise NotFound(f"unknown OS '{name}'", hint=_suggest(name, db))


def _nearest(name: str, version: tuple[int, ...], known: list[tuple[tuple[int, ...], OsEntry]]) -> Match:
    in_series = [k for k in known if k[0][:len(version)] == version]
    if in_series:
        found, entry = max(in_series, key=lambda k: k[0])
        if found == version:
            return Match(entry, name, False, f"{name} is {entry.short_id} ({entry.name})")
        return Match(entry, name, False, f"{name} means the newest known release of that series: "
                                         f"{entry.short_id} ({entry.name})")
    lower = [k for k in known if k[0] < version]
    entry = max(lower, key=lambda k: k[0])[1] if lower else min(known, key=lambda k: k[0])[1]
    how = "newest known release below it" if lower else "oldest known release of that series"
    return Match(entry, name, True, f"OS '{name}' is not in the osinfo database; using the {how}, "
                                    f"{entry.short_id} ({entry.name}); its devices and sizes may be out of date")


def _suggest(name: str, db: Database) -> str:
    close = difflib.get_close_matches(name.lower(), [s for s in db.short if s == s.lower()], n=4, cutoff=0.6)
    if close:
        return f"did you mean {', '.join(close)}? (see `kvmkit os list`)"
    return "see `kvmkit os list` for the OSes kvmkit knows (e.g. debian12, ubuntu24.04, rhel9.1, win11)"


def is_windows(entry: OsEntry) -> bool:
    return entry.distro == "win" or (entry.family or "").startswith("win")


def summary(entry: OsEntry, db: Database | None = None) -> dict[str, Any]:
    db = db or load()
    return {"id": entry.id, "short_id": entry.short_id, "name": entry.name, "version": entry.version,
            "family": entry.family, "distro": entry.distro, "release_date": entry.release_date,
            "source": entry.source, "source_name": SOURCES.get(entry.source, entry.source),
            "replaces": db.replaced.get(entry.id)}


def list_os(family: str | None = None) -> list[dict[str, Any]]:
    """Every OS the database knows (one row each), oldest first within a distro; ``family`` filters on
    family or distro (linux, winnt, debian, win, fedora ...)."""
    db = load()
    rows = [summary(e, db) for e in db.entries.values()
            if family is None or family.lower() in ((e.family or "").lower(), (e.distro or "").lower())]
    if family is not None and not rows:  # a typo, not an empty family: say which ones exist
        known = sorted({(x or "").lower() for e in db.entries.values() for x in (e.family, e.distro)} - {""})
        close = difflib.get_close_matches(family.lower(), known, n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        raise InvalidInput(f"unknown OS family or distro '{family}'{guess}", hint=f"one of: {', '.join(known)}")
    rows.sort(key=lambda r: (r["distro"] or "", r["release_date"] or "", r["short_id"]))
    return rows
