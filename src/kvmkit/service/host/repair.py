"""``kvmkit host check``'s security-record check and ``kvmkit host repair``: libvirt's stale security
records found, cleared, and every change said.

Which files are looked at: kvmkit's data directory (its image cache among them), the target directories
of active storage pools, and every file a defined VM names (disks, kernels, initrds, NVRAM ...); or only
the files under ``paths`` when given. A file that a running VM uses is never touched, whatever its record
says. The order matters (see kvmkit.host.seclabels.clear): records are read first, then libvirt is asked
which files running VMs use, then each stale record is re-read under libvirt's relabel lock before it
is cleared, so a VM that starts meanwhile keeps its record.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import libvirt
from lxml import etree

from kvmkit.config import data_dir
from kvmkit.errors import InvalidInput, NotFound
from kvmkit.host import seclabels
from kvmkit.host.check import WARN, Check, check_security_records, dac_base_owner, report
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.storage_use import files_of_defined_vms, files_of_running_vms

FILE_POOL_TYPES = ("dir", "fs", "netfs")


@dataclass
class RepairResult:
    """What ``repair`` changed (or, with ``dry_run``, would change)."""

    dry_run: bool
    scanned: int                                               # distinct files looked at
    cleared: list[seclabels.Cleared] = field(default_factory=list)
    kept: list[seclabels.Held] = field(default_factory=list)    # in use by running VMs: untouched
    skipped: list[seclabels.Cleared] = field(default_factory=list)  # changed or locked meanwhile

    def to_dict(self) -> dict[str, Any]:
        return {"dry_run": self.dry_run, "scanned": self.scanned,
                "cleared": [c.to_dict() for c in self.cleared], "kept": [k.to_dict() for k in self.kept],
                "skipped": [s.to_dict() for s in self.skipped]}


def _require_local(conn: libvirt.virConnect) -> None:
    host = urlparse(conn.getURI()).hostname
    if host and host not in ("localhost", "127.0.0.1", "::1"):
        raise InvalidInput(f"security records are attributes of files on {host}; kvmkit reads this host's files",
                           hint=f"run kvmkit host check / host repair on {host} itself")


def scan_roots(conn: libvirt.virConnect) -> list[str]:
    """kvmkit's data directory and the target directories of active file-based pools."""
    roots = [str(data_dir())]
    with libvirt_errors("listing storage pools"):
        pools = conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    for pool in pools:
        try:
            root = etree.fromstring(pool.XMLDesc(0).encode())
        except libvirt.libvirtError:
            continue
        target = root.findtext("target/path")
        if root.get("type") in FILE_POOL_TYPES and target and os.path.isdir(target):
            roots.append(target)
    return roots


def find(conn: libvirt.virConnect, paths: Sequence[str] | None = None
         ) -> tuple[list[seclabels.LabelRecord], list[seclabels.Held], int]:
    """(stale records, records of files running VMs use, files looked at)."""
    _require_local(conn)
    if paths:
        for p in paths:
            if not os.path.exists(p):
                raise NotFound(f"{p} does not exist", hint="give existing files or directories with --path")
        candidates = seclabels.files_under(paths)
    else:
        candidates = itertools.chain(seclabels.files_under(scan_roots(conn)), sorted(files_of_defined_vms(conn)))
    records, scanned = seclabels.scan(candidates)
    in_use = files_of_running_vms(conn)  # after the scan: a VM started meanwhile is in here
    stale, held = seclabels.split(records, in_use)
    return stale, held, scanned


def qemu_owner(conn: libvirt.virConnect) -> tuple[int, int] | None:
    """The uid:gid libvirt's DAC driver gives files (qemu.conf's user and group)."""
    with libvirt_errors("reading the host capabilities"):
        return dac_base_owner(conn.getCapabilities())


def repair(conn: libvirt.virConnect, dry_run: bool = False, paths: Sequence[str] | None = None) -> RepairResult:
    """Clear every stale libvirt security record (on files no running VM uses) and give each file back
    to the owner libvirt recorded, when it is still owned by the QEMU user. ``dry_run``: change nothing,
    say what would change. ``paths``: only files under these files/directories."""
    stale, held, scanned = find(conn, paths)
    owner = qemu_owner(conn)
    result = RepairResult(dry_run, scanned, kept=held)
    for rec in stale:
        done = seclabels.clear(rec, relabelled_owner=owner, dry_run=dry_run)
        (result.skipped if done.skipped else result.cleared).append(done)
    return result


def records_check(conn: libvirt.virConnect) -> Check:
    stale, held, scanned = find(conn)
    return check_security_records(stale, held, scanned)


def _records_check_at(uri: str) -> Check:
    from kvmkit.errors import HostError, KvmkitError
    from kvmkit.hypervisor.connection import connect

    try:
        conn = connect(uri)
    except HostError:
        return Check("security_records", WARN, "libvirtd unreachable: records not checked", "see the libvirtd check")
    try:
        return records_check(conn)
    except KvmkitError as err:
        return Check("security_records", WARN, f"not checked: {err.message}", err.hint or "see the message")
    finally:
        conn.close()


def readiness(uri: str) -> dict[str, object]:
    """``host check``: the host layer's readiness report plus the security-record check."""
    return report(uri, extra=[lambda: _records_check_at(uri)])
