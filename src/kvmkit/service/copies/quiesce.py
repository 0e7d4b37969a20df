"""Quiescing snapshots through the guest agent, and the record of how consistent each snapshot is.

What kvmkit does per kind of snapshot:

- running VM, external disk-only (``--disk-only``): when the guest agent is connected libvirt is asked for
  ``VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE`` (it freezes the guest's file systems, takes the overlays, thaws;
  libvirt thaws on its own error paths too). If the agent cannot freeze, the snapshot is taken again
  without it and recorded as crash-consistent, with the agent's error.
- running VM, with memory (internal qcow2, or external + memory file for UEFI): no freeze. The guest's RAM
  is saved with its disks at the same instant, so reverting resumes it exactly where it was; libvirt does
  not allow QUIESCE with memory anyway. Recorded as ``memory``.
- shut-off VM: nothing runs, nothing to freeze. Recorded as ``offline``.

libvirt's snapshot XML has no room for this, so kvmkit keeps a small record per VM (by UUID) in its data
directory: ``snapshot-notes/<uuid>.json``; snapshots made elsewhere have no record (``quiesced: null``).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt

from kvmkit.config import data_dir
from kvmkit.service.vms.agent import connected


def _file(dom: libvirt.virDomain) -> Path:
    return data_dir() / "snapshot-notes" / f"{dom.UUIDString()}.json"


def _read(dom: libvirt.virDomain) -> dict[str, Any]:
    try:
        data = json.loads(_file(dom).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(dom: libvirt.virDomain, data: dict[str, Any]) -> None:
    path = _file(dom)
    if not data:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def record(dom: libvirt.virDomain, snapshot: str, note: dict[str, Any]) -> None:
    data = _read(dom)
    data[snapshot] = {**note, "at": datetime.now(UTC).isoformat()}
    _write(dom, data)


def forget(dom: libvirt.virDomain, snapshot: str) -> None:
    data = _read(dom)
    if data.pop(snapshot, None) is not None:
        _write(dom, data)


def note_of(dom: libvirt.virDomain, snapshot: str) -> dict[str, Any]:
    """{quiesced, consistency, quiesce_error?} as recorded at creation ({quiesced: None} when unknown)."""
    note = _read(dom).get(snapshot)
    if not isinstance(note, dict):
        return {"quiesced": None, "consistency": None}
    out = {"quiesced": bool(note.get("quiesced")), "consistency": note.get("consistency")}
    if note.get("quiesce_error"):
        out["quiesce_error"] = note["quiesce_error"]
    return out


def create(dom: libvirt.virDomain, xml: str, flags: int, *, running: bool) -> tuple[libvirt.virDomainSnapshot,
                                                                                  dict[str, Any]]:
    """Create the snapshot, quiesced when it is a disk-only snapshot of a running VM whose agent answers."""
    disk_only = bool(flags & libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
    if not running:
        return dom.snapshotCreateXML(xml, flags), {"quiesced": False, "consistency": "offline"}
    if not disk_only:
        return dom.snapshotCreateXML(xml, flags), {"quiesced": False, "consistency": "memory"}
    error = "no guest agent connected"
    if connected(dom):
        try:
            snap = dom.snapshotCreateXML(xml, flags | libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
            return snap, {"quiesced": True, "consistency": "quiesced"}
        except libvirt.libvirtError as err:  # ATOMIC: nothing was made; the agent could not freeze
            error = err.get_error_message() or str(err)
    snap = dom.snapshotCreateXML(xml, flags)
    return snap, {"quiesced": False, "consistency": "crash-consistent", "quiesce_error": error}
