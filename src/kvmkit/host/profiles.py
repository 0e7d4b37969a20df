"""Tuning profiles: named sets of sysctl and sysfs values, applied reversibly.

Profiles use tuned's file format (``[main] include=``, ``[sysctl]``, ``[vm] transparent_hugepages=``,
plus ``[sysfs] /sys/path = value``). Built-ins (``virtual-host``, ``virtual-guest`` and their parent
``throughput-performance``) ship in ``kvmkit/host/profiles/*.ini``; user profiles live in
``/etc/kvmkit/profiles/NAME.conf`` (or ``NAME/tuned.conf``) or come from ``--file``.

``apply`` records every value it replaces in a state file so ``rollback`` restores them exactly;
``--persist`` also writes ``/etc/sysctl.d/90-kvmkit-NAME.conf`` (removed on rollback). When tuned is
installed and running, tuned applies the profile (``tuned-adm profile``) and rollback re-selects the
profile that was active before.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from kvmkit.errors import Conflict, HostError, InvalidInput, NotFound
from kvmkit.host import sysfs

USER_DIR = Path(os.environ.get("KVMKIT_PROFILE_DIR", "/etc/kvmkit/profiles"))
SYSCTL_D = Path(os.environ.get("KVMKIT_SYSCTL_D", "/etc/sysctl.d"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SECTIONS = {"main", "sysctl", "sysfs", "vm"}


@dataclass
class Setting:
    kind: str  # sysctl | sysfs
    key: str  # vm.dirty_ratio or /sys/... path
    value: str

    @property
    def path(self) -> Path:
        return sysfs.sysctl_path(self.key) if self.kind == "sysctl" else sysfs.checked_sysfs_path(self.key)


def _builtin_dir():
    return resources.files("kvmkit.host") / "profiles"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"bad profile name {name!r}", hint="letters, digits, '.', '_' and '-' (max 64)")
    return name


def _find(name: str) -> tuple[str, str]:
    """(source, text) of a profile by name: user profiles first, then built-ins."""
    _check_name(name)
    for path in (USER_DIR / f"{name}.conf", USER_DIR / name / "tuned.conf"):
        if path.is_file():
            return str(path), path.read_text()
    builtin = _builtin_dir() / f"{name}.ini"
    if builtin.is_file():
        return f"built-in:{name}", builtin.read_text()
    raise NotFound(f"tuning profile {name!r} not found",
                   hint="kvmkit host profile list shows them; user profiles go in " + str(USER_DIR))


def _parse(text: str, source: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keep case (sysfs paths)
    try:
        cp.read_string(text, source=source)
    except configparser.Error as err:
        raise InvalidInput(f"profile {source} is not valid: {err}".splitlines()[0],
                           hint="use tuned.conf syntax: [main], [sysctl] key = value") from err
    return cp


def load(name: str | None = None, *, file: str | Path | None = None, _depth: int = 0) -> dict[str, Any]:
    """A profile with its includes resolved: name, summary, sources, settings (child values win), ignored."""
    if _depth > 8:
        raise InvalidInput(f"profile include chain too deep at {name!r}", hint="check for include loops")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise NotFound(f"profile file {path} does not exist")
        source, text = str(path), path.read_text()
        name = name or (path.parent.name if path.name == "tuned.conf" else path.stem)
        _check_name(name)
    else:
        if name is None:
            raise InvalidInput("give a profile name or --file")
        source, text = _find(name)
    cp = _parse(text, source)
    merged: dict[tuple[str, str], str] = {}
    sources = [source]
    ignored: list[str] = []
    include = cp.get("main", "include", fallback="").strip()
    for parent in [p.strip() for p in include.split(",") if p.strip()]:
        base = load(parent, _depth=_depth + 1)
        sources = base["sources"] + sources
        ignored += base["ignored"]
        merged.update({(s["kind"], s["key"]): s["value"] for s in base["settings"]})
    for section in cp.sections():
        if section not in _SECTIONS:
            ignored.append(f"[{section}] (not managed by kvmkit)")
            continue
        for key, value in cp.items(section):
            if section == "sysctl":
                sysfs.sysctl_path(key)  # validates the name
                merged[("sysctl", key)] = value.strip()
            elif section == "sysfs":
                sysfs.checked_sysfs_path(key)
                merged[("sysfs", key)] = value.strip()
            elif section == "vm" and key == "transparent_hugepages":
                merged[("sysfs", str(sysfs.THP_DIR / "enabled"))] = value.strip()
            elif section == "vm":
                ignored.append(f"[vm] {key}")
    settings = [{"kind": k, "key": key, "value": v} for (k, key), v in merged.items()]
    return {"name": name, "summary": cp.get("main", "summary", fallback=""), "sources": sources,
            "settings": settings, "ignored": ignored}


def list_profiles() -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    for entry in _builtin_dir().iterdir():
        if entry.name.endswith(".ini"):
            names[entry.name[:-4]] = "built-in"
    if USER_DIR.is_dir():
        for entry in sorted(USER_DIR.iterdir()):
            if entry.suffix == ".conf" or (entry / "tuned.conf").is_file():
                names[entry.stem if entry.suffix == ".conf" else entry.name] = "user"
    active = _state()
    out = []
    for name, kind in sorted(names.items()):
        try:
            summary = load(name)["summary"]
        except Exception as err:  # a broken user file must not hide the others
            summary = f"(invalid: {err})"
        out.append({"name": name, "kind": kind, "summary": summary,
                    "applied": bool(active and active["profile"] == name)})
    return out


def show(name: str | None = None, *, file: str | Path | None = None) -> dict[str, Any]:
    """A profile's settings with each one's current value on this host (None when the kernel lacks it)."""
    prof = load(name, file=file)
    for s in prof["settings"]:
        path = Setting(s["kind"], s["key"], s["value"]).path
        s["path"] = str(path)
        s["current"] = sysfs.current(path) if path.exists() else None
    return prof


# --- applying and rolling back -------------------------------------------------------------------------

def _state_path() -> Path:
    from kvmkit.config import data_dir

    path = data_dir() / "tuning"
    path.mkdir(parents=True, exist_ok=True)
    return path / "applied-profile.json"


def _state() -> dict[str, Any] | None:
    path = _state_path()
    return json.loads(path.read_text()) if path.exists() else None


def tuned_running() -> bool:
    """tuned is installed AND its daemon answers."""
    if not shutil.which("tuned-adm"):
        return False
    res = subprocess.run(["tuned-adm", "active"], capture_output=True, text=True, timeout=30)
    return res.returncode == 0 and "Current active profile" in res.stdout


def tuned_knows(name: str) -> bool:
    """tuned has a profile of this name (its own, or the admin's in /etc/tuned); else kvmkit applies directly."""
    return any(Path(d, name, "tuned.conf").is_file() for d in ("/usr/lib/tuned", "/etc/tuned"))


def _tuned_active() -> str | None:
    out = subprocess.run(["tuned-adm", "active"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"Current active profile:\s*(\S+)", out)
    return match.group(1) if match else None


def _tuned_select(name: str | None) -> None:
    cmd = ["tuned-adm", "profile", name] if name else ["tuned-adm", "off"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise HostError(f"tuned-adm could not select profile {name}: {res.stderr.strip() or res.stdout.strip()}",
                        hint="see tuned-adm list; user profiles must exist in /etc/tuned/NAME/tuned.conf")


def _persist_path(name: str) -> Path:
    return SYSCTL_D / f"90-kvmkit-{name}.conf"


def apply(name: str | None = None, *, file: str | Path | None = None, persist: bool = False,
          use_tuned: bool | None = None) -> dict[str, Any]:
    """Apply a profile, recording what it replaced. Conflict when a profile is applied already."""
    prof = show(name, file=file)
    name = prof["name"]
    previous = _state()
    if previous:
        raise Conflict(f"profile {previous['profile']!r} is applied already",
                       hint="kvmkit host profile rollback first, then apply the new one")
    if use_tuned is None:
        use_tuned = tuned_running() and tuned_knows(name)
    changes: list[sysfs.Change] = []
    skipped = [s["key"] for s in prof["settings"] if s["current"] is None]
    tuned_prev: str | None = None
    persist_file: dict[str, Any] | None = None
    try:
        if use_tuned:
            tuned_prev = _tuned_active()
            before = {s["path"]: s["current"] for s in prof["settings"] if s["current"] is not None}
            _tuned_select(name)
            changes = [sysfs.Change(p, b, sysfs.current(p)) for p, b in before.items()]
        else:
            for s in prof["settings"]:
                if s["current"] is not None:
                    changes.append(sysfs.write(s["path"], s["value"]))
        if persist:
            persist_file = _write_persist(name, prof)
    except Exception:
        sysfs.restore(changes) if not use_tuned else _tuned_select(tuned_prev)
        raise
    state = {"profile": name, "method": "tuned" if use_tuned else "direct", "tuned_previous": tuned_prev,
             "changes": [c.to_dict() for c in changes], "persist": persist_file, "applied_at": time.time()}
    _state_path().write_text(json.dumps(state, indent=1))
    return {"profile": name, "method": state["method"], "changed": [c.to_dict() for c in changes],
            "skipped": skipped, "ignored": prof["ignored"], "persisted": persist_file and persist_file["path"]}


def _write_persist(name: str, prof: dict[str, Any]) -> dict[str, Any]:
    path = _persist_path(name)
    old = path.read_text() if path.exists() else None
    lines = [f"# written by kvmkit host profile apply {name} --persist; removed by kvmkit host profile rollback"]
    lines += [f"{s['key']} = {s['value']}" for s in prof["settings"]
              if s["kind"] == "sysctl" and s["current"] is not None]
    SYSCTL_D.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return {"path": str(path), "previous_content": old}


def rollback() -> dict[str, Any]:
    """Restore every value the applied profile replaced and remove its sysctl.d file."""
    state = _state()
    if not state:
        raise NotFound("no kvmkit tuning profile is applied", hint="kvmkit host profile apply NAME")
    changes = [sysfs.Change.from_dict(c) for c in state["changes"]]
    if state["method"] == "tuned":
        _tuned_select(state.get("tuned_previous"))
    restored = sysfs.restore(changes)
    persist = state.get("persist")
    if persist:
        path = Path(persist["path"])
        if persist.get("previous_content") is not None:
            path.write_text(persist["previous_content"])
        else:
            path.unlink(missing_ok=True)
    _state_path().unlink()
    return {"profile": state["profile"], "method": state["method"],
            "restored": [{"path": c.path, "value": c.after, "was": c.before} for c in restored],
            "unpersisted": persist and persist["path"]}


def applied() -> dict[str, Any] | None:
    return _state()
