"""Back up a VM to a directory: its definition, every disk as compressed qcow2, a manifest with sha256 sums.

A running (or paused) VM is copied through libvirt's backup API (push mode): the disks' state at the
moment the backup job begins goes to scratch files while the guest keeps running, so the copy is
consistent without stopping it. When a qemu-guest-agent answers, guest file systems are frozen for that
moment (and thawed right after); the micro-guest and other agent-less guests get a crash-consistent copy
and the manifest says so. A shut-off VM's disks are read directly (backing chains flattened).

The definition is kept with its secrets (VNC/SPICE passwords: VIR_DOMAIN_XML_SECURE), so a restored VM
has them again; domain.xml is therefore mode 0600 and the manifest says so (``domain_xml_secrets``,
``private_files``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid as uuidlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.config import data_dir
from kvmkit.errors import Conflict, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.images.plain_copy import copy_file
from kvmkit.service.copies import snapshots
from kvmkit.service.copies.clone import Progress, convert, scaled, virtual_size
from kvmkit.service.vms.agent import frozen as frozen_guest
from kvmkit.xml.osboot import nvram_path

FORMAT = "kvmkit-backup"
VERSION = 1
MANIFEST = "manifest.json"
DOMAIN_XML = "domain.xml"
NVRAM = "nvram.fd"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file only its owner can read (mode 0600 from the start, not chmod after)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def backup_vm(conn: libvirt.virConnect, name: str, dest: str | Path, *,
              progress: Progress | None = None) -> dict[str, Any]:
    """Write ``name``'s backup into ``dest`` (created; must be empty); return the manifest."""
    dom = snapshots.lookup(conn, name)
    out = Path(dest).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise Conflict(f"backup destination {out} exists and is not an empty directory",
                       hint="give a new or empty directory with --to")
    created_dir = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    scratch = data_dir() / "backup-tmp" / uuidlib.uuid4().hex
    try:
        manifest = _backup(conn, dom, out, scratch, progress)
    except BaseException:
        if created_dir:
            shutil.rmtree(out, ignore_errors=True)
        else:
            for child in out.iterdir():
                with contextlib.suppress(OSError):
                    child.unlink()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if progress:
        progress(100.0)
    return manifest


def _backup(conn: libvirt.virConnect, dom: libvirt.virDomain, out: Path, scratch: Path,
            progress: Progress | None) -> dict[str, Any]:
    name = dom.name()
    # SECURE: with the VNC/SPICE passwords, so a restored VM keeps them; hence the file is private (0600)
    flags = libvirt.VIR_DOMAIN_XML_SECURE | (libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() else 0)
    inactive = dom.XMLDesc(flags)
    write_private(out / DOMAIN_XML, inactive)
    nvram_src = nvram_path(etree.fromstring(inactive.encode()))
    nvram = None
    if nvram_src and os.path.isfile(nvram_src):  # UEFI variables (boot entries, secure-boot keys)
        copy_file(nvram_src, out / NVRAM, metadata=False)
        nvram = NVRAM
    active = dom.isActive() == 1
    disk_list = snapshots.disks(dom.XMLDesc(0), conn)
    for d in disk_list:
        if not d["path"] or d["type"] not in ("file", "volume", None):
            raise OperationFailed(f"disk {d['target']} of '{name}' is not a file disk: kvmkit backs up file disks "
                                  "only", hint="detach it or back it up with its storage's own tools")
    entries: list[dict[str, Any]] = []
    frozen = False
    if active and disk_list:
        frozen = _live_copy(dom, disk_list, scratch, scaled(progress, 0, 50))
        sources = {d["target"]: (str(scratch / f"{d['target']}.qcow2"), "qcow2", False) for d in disk_list}
        start, span = 50.0, 50.0
    else:
        sources = {d["target"]: (d["path"], d["format"], False) for d in disk_list}
        start, span = 0.0, 100.0
    count = max(len(disk_list), 1)
    for i, d in enumerate(disk_list):
        path, fmt, shared = sources[d["target"]]
        file = f"{d['target']}.qcow2"
        convert(path, fmt, str(out / file), "qcow2", compress=True, shared=shared,
                progress=scaled(progress, start + span * i / count, span / count))
        entries.append({"target": d["target"], "file": file, "format": "qcow2", "original_path": d["path"],
                        "original_format": d["format"], "virtual_size": virtual_size(str(out / file), "qcow2")})
    files = {f: sha256(out / f) for f in [DOMAIN_XML, *([nvram] if nvram else []), *(e["file"] for e in entries)]}
    if active:
        consistency = "live: libvirt backup job" + (", guest file systems frozen by the guest agent" if frozen
                                                     else ", no guest agent: crash-consistent")
    else:
        consistency = "offline: the VM was shut off"
    manifest = {
        "format": FORMAT, "version": VERSION, "vm": name, "uuid": dom.UUIDString(),
        "created": datetime.now(UTC).isoformat(), "consistency": consistency, "frozen": frozen,
        "quiesced": frozen,  # the same word as snapshots use
        "domain_xml": DOMAIN_XML, "domain_xml_secrets": True, "private_files": [DOMAIN_XML],
        "nvram": nvram, "disks": entries, "sha256": files,
        "sizes": {f: (out / f).stat().st_size for f in files},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _live_copy(dom: libvirt.virDomain, disk_list: list[dict[str, Any]], scratch: Path,
               progress: Progress | None) -> bool:
    """Push-mode libvirt backup of every disk into ``scratch``; return whether the guest was frozen."""
    scratch.mkdir(parents=True, exist_ok=True)
    scratch.chmod(0o755)  # QEMU (libvirt-qemu) writes the scratch files
    wanted = {d["target"] for d in disk_list}
    root = etree.Element("domainbackup", mode="push")
    dx = etree.SubElement(root, "disks")
    for disk in etree.fromstring(dom.XMLDesc(0).encode()).iterfind("devices/disk"):
        target = disk.find("target").get("dev")
        if target not in wanted:
            etree.SubElement(dx, "disk", name=target, backup="no")
            continue
        el = etree.SubElement(dx, "disk", name=target, backup="yes", type="file")
        etree.SubElement(el, "target", file=str(scratch / f"{target}.qcow2"))
        etree.SubElement(el, "driver", type="qcow2")
    # frozen while the job begins, thawed right after it and on every error
    with frozen_guest(dom) as frozen, libvirt_errors(f"start backup of {dom.name()}"):
        dom.backupBegin(etree.tostring(root, encoding="unicode"), None, 0)
    try:
        _wait_backup(dom, progress)
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            dom.abortJob()
        raise
    return frozen


def _wait_backup(dom: libvirt.virDomain, progress: Progress | None, timeout: float = 3600) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with libvirt_errors(f"backup job of {dom.name()}"):
            stats = dom.jobStats(0)
        if stats.get("type", libvirt.VIR_DOMAIN_JOB_NONE) == libvirt.VIR_DOMAIN_JOB_NONE:
            break
        total, done = stats.get("disk_total") or stats.get("data_total"), stats.get("disk_processed") or \
            stats.get("data_processed")
        if progress and total:
            progress(100.0 * (done or 0) / total)
        if time.monotonic() > deadline:
            with contextlib.suppress(libvirt.libvirtError):
                dom.abortJob()
            raise OperationFailed(f"backup of {dom.name()} did not finish in {timeout:.0f} s")
        time.sleep(0.2)
    with contextlib.suppress(libvirt.libvirtError):
        done_stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        if done_stats.get("type") == libvirt.VIR_DOMAIN_JOB_FAILED:
            raise OperationFailed(f"the backup job of {dom.name()} failed: {done_stats.get('errmsg', '?')}",
                                  hint="check free space in the kvmkit data directory and libvirtd's log")
    if progress:
        progress(100.0)


def read_manifest(backup_dir: str | Path) -> dict[str, Any]:
    from kvmkit.errors import InvalidInput, NotFound

    path = Path(backup_dir) / MANIFEST
    if not path.is_file():
        raise NotFound(f"{backup_dir} is not a kvmkit backup: {MANIFEST} is missing",
                       hint="give the directory `kvmkit vm backup NAME --to DIR` wrote")
    try:
        data = json.loads(path.read_text())
    except ValueError as err:
        raise InvalidInput(f"{path} is not valid JSON: {err}", hint="the backup is damaged") from err
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        raise InvalidInput(f"{path} is not a {FORMAT} version {VERSION} manifest",
                           hint="this backup was written by another tool or kvmkit version")
    sums, disks = data.get("sha256"), data.get("disks")
    if not isinstance(sums, dict) or not isinstance(disks, list) or not isinstance(data.get("domain_xml"), str) \
            or not all(isinstance(d, dict) and isinstance(d.get("file"), str) and isinstance(d.get("target"), str)
                       for d in disks):
        raise InvalidInput(f"{path} lacks its file list, checksums or disk entries", hint="the backup is damaged")
    names = [*sums, data["domain_xml"], *(d["file"] for d in disks), *([data["nvram"]] if data.get("nvram") else [])]
    for f in names:
        if not isinstance(f, str) or os.path.basename(f) != f or f in ("", ".", ".."):
            raise InvalidInput(f"manifest names an unsafe file '{f}'", hint="the backup is damaged or forged")
    return data
