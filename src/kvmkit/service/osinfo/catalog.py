"""``os show``: one OS in full (its entry, what it inherits, the devices kvmkit uses, the preset it gives)."""

from __future__ import annotations

from typing import Any

from kvmkit.service.osinfo import devices
from kvmkit.service.osinfo.db import Database, load
from kvmkit.service.osinfo.lookup import find, summary
from kvmkit.service.osinfo.presets import preset_of


def show_os(name: str) -> dict[str, Any]:
    """One OS in full: identity, where it came from, what it derives from, devices kvmkit uses, resources,
    firmware, variants and the preset ``vm create --os`` would apply."""
    db = load()
    match = find(name, db)
    entry = match.entry
    sup = devices.support(db, entry)
    out = summary(entry, db)
    out.update({
        "requested": name, "fallback": match.fallback, "message": match.message, "short_ids": list(entry.short_ids),
        "vendor": entry.vendor, "codename": entry.codename, "eol_date": entry.eol_date, "path": entry.path,
        "derives_from": [_ref(db, i) for i in entry.derives_from], "upgrades": [_ref(db, i) for i in entry.upgrades],
        "inherits_from": [p.short_id for p in db.parents(entry)],
        "devices": devices.names(db, sup.ids),
        "resources": db.resources(entry),
        "firmware": [{"type": f.type, "supported": f.supported,
                      "features": [{"name": n, "required": r} for n, r in f.features]} for f in db.firmware(entry)],
        "variants": [{"id": v, "name": n} for v, n in entry.variants],
        "preset": preset_of(db, entry),
    })
    return out


def _ref(db: Database, os_id: str) -> str:
    entry = db.get(os_id)
    return entry.short_id if entry else os_id
