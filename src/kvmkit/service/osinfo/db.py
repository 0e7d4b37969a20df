"""A small reader of libosinfo's database (the XML of Debian's osinfo-db), with kvmkit's own overlay.

Where entries come from, lowest priority first; an entry replaces one with the same osinfo id read before it:

  system   /usr/share/osinfo          Debian's osinfo-db ($OSINFO_SYSTEM_DIR overrides, as for libosinfo)
  kvmkit   kvmkit/service/osinfo/overlay   entries kvmkit ships for what the packaged db lacks or gets wrong
  local    /etc/osinfo                an administrator's additions ($OSINFO_LOCAL_DIR)
  user     ~/.config/osinfo           the user's additions ($OSINFO_USER_DIR)

Each location has libosinfo's layout (``os/<vendor>/<name>.xml``, ``device/<vendor>/...``) and schema, so
the overlay can also be handed to libosinfo itself (``OSINFO_LOCAL_DIR=<overlay> osinfo-query os``).
Files under ``os/**/*.d/`` (installer drivers) are not read. Nothing is resolved or fetched while parsing:
no entities, no DTDs, no network.

An entry's devices are its own plus those of the OSes it derives from or clones (``derives-from``,
``clones``), minus any that a nearer entry marks ``supported="false"``. Its resources and firmware are
its own when it lists any, else those of the nearest entry it derives from.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

OVERLAY_DIR = Path(__file__).resolve().parent / "overlay"
ARCH = "x86_64"
RESOURCE_KINDS = ("minimum", "recommended", "maximum", "network-install")
RESOURCE_KEYS = {"cpu": "cpu_hz", "n-cpus": "n_cpus", "ram": "ram", "storage": "storage"}


@dataclass(frozen=True)
class Firmware:
    type: str                        # bios | efi
    supported: bool = True
    features: tuple[tuple[str, bool], ...] = ()   # kvmkit's extension: (name, required), e.g. secure-boot


@dataclass(frozen=True)
class OsEntry:
    id: str
    short_ids: tuple[str, ...]
    name: str
    version: str | None
    vendor: str | None
    family: str | None
    distro: str | None
    codename: str | None
    release_date: str | None
    eol_date: str | None
    release_status: str | None
    derives_from: tuple[str, ...]
    upgrades: tuple[str, ...]
    clones: str | None
    devices: tuple[tuple[str, bool], ...]        # (device id, supported)
    resources: dict[str, dict[str, dict[str, int]]]   # arch -> kind -> key -> value
    firmware: dict[str, tuple[Firmware, ...]]         # arch -> firmware entries
    variants: tuple[tuple[str, str], ...]             # (variant id, name)
    source: str                                       # system | kvmkit | local | user
    path: str

    @property
    def short_id(self) -> str:
        return self.short_ids[0] if self.short_ids else self.id


@dataclass(frozen=True)
class Device:
    id: str
    name: str
    device_class: str | None
    source: str


@dataclass
class Database:
    entries: dict[str, OsEntry] = field(default_factory=dict)     # osinfo id -> entry
    short: dict[str, str] = field(default_factory=dict)           # short id -> osinfo id
    devices: dict[str, Device] = field(default_factory=dict)
    replaced: dict[str, str] = field(default_factory=dict)        # osinfo id -> source it replaced
    locations: list[tuple[str, str]] = field(default_factory=list)  # (source, directory) as read

    def get(self, os_id: str) -> OsEntry | None:
        return self.entries.get(os_id)

    def by_short_id(self, short_id: str) -> OsEntry | None:
        os_id = self.short.get(short_id) or self.short.get(short_id.lower())
        return self.entries.get(os_id) if os_id else None

    # -- inherited views -----------------------------------------------------------------------------
    def parents(self, entry: OsEntry) -> Iterator[OsEntry]:
        """The entries ``entry`` derives from or clones, nearest first (each once)."""
        seen = {entry.id}
        queue = [*entry.derives_from, *([entry.clones] if entry.clones else [])]
        while queue:
            os_id = queue.pop(0)
            parent = self.entries.get(os_id)
            if os_id in seen or parent is None:
                continue
            seen.add(os_id)
            yield parent
            queue += [*parent.derives_from, *([parent.clones] if parent.clones else [])]

    def all_devices(self, entry: OsEntry) -> set[str]:
        supported: set[str] = set()
        decided: set[str] = set()
        for item in (entry, *self.parents(entry)):
            for dev_id, ok in item.devices:
                if dev_id not in decided:  # the nearest entry's word wins
                    decided.add(dev_id)
                    if ok:
                        supported.add(dev_id)
        return supported

    def resources(self, entry: OsEntry, arch: str = ARCH) -> dict[str, dict[str, int]]:
        for item in (entry, *self.parents(entry)):
            res = item.resources.get(arch) or item.resources.get("all")
            if res:
                return res
        return {}

    def firmware(self, entry: OsEntry, arch: str = ARCH) -> tuple[Firmware, ...]:
        for item in (entry, *self.parents(entry)):
            fw = item.firmware.get(arch)
            if fw:
                return fw
        return ()


def locations() -> list[tuple[str, Path]]:
    """The database locations in priority order (lowest first), as libosinfo finds them, plus kvmkit's."""
    home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [
        ("system", Path(os.environ.get("OSINFO_SYSTEM_DIR") or "/usr/share/osinfo")),
        ("kvmkit", OVERLAY_DIR),
        ("local", Path(os.environ.get("OSINFO_LOCAL_DIR") or "/etc/osinfo")),
        ("user", Path(os.environ.get("OSINFO_USER_DIR") or home / "osinfo")),
    ]


def load() -> Database:
    """The database as the locations hold it now (cached per process; see :func:`reload`)."""
    return _load(tuple((s, str(p)) for s, p in locations()))


def reload() -> Database:
    _load.cache_clear()
    return load()


@functools.lru_cache(maxsize=4)
def _load(where: tuple[tuple[str, str], ...]) -> Database:
    db = Database()
    for source, directory in where:
        base = Path(directory)
        if not base.is_dir():
            continue
        db.locations.append((source, directory))
        for path in sorted((base / "device").rglob("*.xml")):
            for dev in _devices_in(path, source):
                db.devices[dev.id] = dev
        for path in sorted((base / "os").rglob("*.xml")):
            if any(part.endswith(".d") for part in path.relative_to(base / "os").parts[:-1]):
                continue  # installer drivers for an OS, not the OS
            for entry in _oses_in(path, source):
                old = db.entries.get(entry.id)
                if old is not None:
                    db.replaced[entry.id] = old.source
                    for sid in old.short_ids:
                        if db.short.get(sid) == old.id:
                            del db.short[sid]
                db.entries[entry.id] = entry
                for sid in entry.short_ids:
                    db.short[sid] = entry.id
                    db.short.setdefault(sid.lower(), entry.id)
    return db


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                          remove_comments=True)


def _parse(path: Path) -> etree._Element | None:
    try:
        root = etree.parse(str(path), _PARSER).getroot()
    except (etree.XMLSyntaxError, OSError):
        return None  # a broken file in a local db is skipped, as libosinfo does
    return root if root.tag == "libosinfo" else None


def _text(el: etree._Element, tag: str) -> str | None:
    for child in el.findall(tag):
        if child.get("{http://www.w3.org/XML/1998/namespace}lang") is None and child.text:
            return child.text.strip()
    return None


def _bool(value: str | None, default: bool = True) -> bool:
    return default if value in (None, "") else value == "true"


def _devices_in(path: Path, source: str) -> Iterator[Device]:
    root = _parse(path)
    if root is None:
        return
    for el in root.findall("device"):
        dev_id = el.get("id")
        if dev_id:
            yield Device(id=dev_id, name=_text(el, "name") or dev_id, device_class=_text(el, "class"),
                         source=source)


def _resources(el: etree._Element) -> dict[str, dict[str, dict[str, int]]]:
    out: dict[str, dict[str, dict[str, int]]] = {}
    for res in el.findall("resources"):
        arch = res.get("arch") or "all"
        kinds = out.setdefault(arch, {})
        for kind in RESOURCE_KINDS:
            node = res.find(kind)
            if node is None:
                continue
            values = kinds.setdefault(kind, {})
            for tag, key in RESOURCE_KEYS.items():
                text = _text(node, tag)
                if text and text.isdigit():
                    values[key] = int(text)
    return out


def _firmware(el: etree._Element) -> dict[str, tuple[Firmware, ...]]:
    out: dict[str, list[Firmware]] = {}
    for fw in el.findall("firmware"):
        arch, typ = fw.get("arch"), fw.get("type")
        if not arch or typ not in ("bios", "efi"):
            continue
        features = tuple((f.get("name") or "", _bool(f.get("required"), False)) for f in fw.findall("feature")
                         if f.get("name"))
        out.setdefault(arch, []).append(Firmware(typ, _bool(fw.get("supported")), features))
    return {arch: tuple(items) for arch, items in out.items()}


def _oses_in(path: Path, source: str) -> Iterator[OsEntry]:
    root = _parse(path)
    if root is None:
        return
    for el in root.findall("os"):
        os_id = el.get("id")
        if not os_id:
            continue
        devices = tuple((d.get("id") or "", _bool(d.get("supported"))) for d in el.findall("devices/device")
                        if d.get("id"))
        clones = el.find("clones")
        yield OsEntry(
            id=os_id,
            short_ids=tuple(s.text.strip() for s in el.findall("short-id") if s.text and s.text.strip()),
            name=_text(el, "name") or os_id,
            version=_text(el, "version"),
            vendor=_text(el, "vendor"),
            family=_text(el, "family"),
            distro=_text(el, "distro"),
            codename=_text(el, "codename"),
            release_date=_text(el, "release-date"),
            eol_date=_text(el, "eol-date"),
            release_status=_text(el, "release-status"),
            derives_from=tuple(d.get("id") or "" for d in el.findall("derives-from") if d.get("id")),
            upgrades=tuple(d.get("id") or "" for d in el.findall("upgrades") if d.get("id")),
            clones=clones.get("id") if clones is not None else None,
            devices=devices,
            resources=_resources(el),
            firmware=_firmware(el),
            variants=tuple((v.get("id") or "", _text(v, "name") or "") for v in el.findall("variant")
                           if v.get("id")),
            source=source,
            path=str(path),
        )
