"""Files as a host's libvirt sees them, through its storage pools: does the destination have this path, is it
the same file the source has (shared storage), which pool would hold a copy.

libvirt lists files only through storage pools. A path inside the target directory of one of the host's
active pools is looked up there (after a refresh); otherwise kvmkit opens a transient ``dir`` pool on the
path's directory (named ``kvmkit-probe-*``, read-only use: it is destroyed right after and creates nothing).

"The same file" on two hosts: libvirt's volume XML carries the file's size and its mtime and ctime with
nanoseconds. A copy can keep the mtime (cp -p, rsync -t) but never the ctime, which the kernel sets on
every change, so a destination that reports the source's very ctime (and size) sees the same file: storage
both hosts share. A disk being written while we look may move on between readings, so the source is read
before and after the destination and the destination's times must lie between.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import libvirt

from kvmkit.xml.migration import dir_pool_xml, pool_facts, volume_facts

PROBE_PREFIX = "kvmkit-probe-"


@dataclass
class FileView:
    path: str
    exists: bool
    dir_exists: bool
    pool: str | None = None  # the host's active pool holding the file's directory (None: seen through a probe)
    pool_type: str | None = None
    facts: dict[str, Any] | None = None
    error: str | None = None


def active_pools(conn: libvirt.virConnect) -> dict[str, tuple[str, str]]:
    """Target directory -> (pool name, pool type) of the host's active pools with a directory."""
    out: dict[str, tuple[str, str]] = {}
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            facts = pool_facts(pool.XMLDesc(0))
            if facts["path"] and not pool.name().startswith(PROBE_PREFIX):
                out[os.path.normpath(facts["path"])] = (pool.name(), facts["type"] or "dir")
    return out


@contextlib.contextmanager
def dir_pool(conn: libvirt.virConnect, directory: str,
              pools: dict[str, tuple[str, str]]) -> Iterator[tuple[libvirt.virStoragePool | None, str | None, str]]:
    """(pool, pool name or None for a probe, error) listing ``directory`` on the host."""
    known = pools.get(os.path.normpath(directory))
    if known is not None:
        pool = conn.storagePoolLookupByName(known[0])
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)  # files made since libvirt last looked (refused while a volume is being built)
        yield pool, known[0], ""
        return
    name = f"{PROBE_PREFIX}{secrets.token_hex(4)}"
    try:
        probe = conn.storagePoolCreateXML(dir_pool_xml(name, directory), 0)
    except libvirt.libvirtError as err:
        yield None, None, err.get_error_message() or str(err)
        return
    try:
        yield probe, None, ""
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            probe.destroy()  # transient: gone with it


def view_files(conn: libvirt.virConnect, paths: Iterable[str],
               pools: dict[str, tuple[str, str]] | None = None) -> dict[str, FileView]:
    """How the host ``conn`` sees each path (one pool or probe per directory)."""
    pools = active_pools(conn) if pools is None else pools
    by_dir: dict[str, list[str]] = {}
    for path in paths:
        by_dir.setdefault(os.path.dirname(os.path.normpath(path)) or "/", []).append(path)
    out: dict[str, FileView] = {}
    for directory, members in by_dir.items():
        with dir_pool(conn, directory, pools) as (pool, pool_name, error):
            pool_type = pools.get(os.path.normpath(directory), (None, None))[1]
            for path in members:
                if pool is None:
                    missing = "no such file" in error.lower() or "cannot open" in error.lower()
                    out[path] = FileView(path, False, not missing, error=error)
                    continue
                try:
                    vol = pool.storageVolLookupByName(os.path.basename(path))
                    out[path] = FileView(path, True, True, pool_name, pool_type, volume_facts(vol.XMLDesc(0)))
                except libvirt.libvirtError as err:
                    exists = err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL
                    out[path] = FileView(path, exists, True, pool_name, pool_type,
                                         error=None if not exists else err.get_error_message())
    return out


def _stamp(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value else None
    except InvalidOperation:
        return None


def same_file(before: FileView, dest: FileView, after: FileView) -> bool | None:
    """True when ``dest`` (the destination's view) is the file the source saw ``before`` and ``after``;
    False when it is another file; None when libvirt gave no timestamps to tell."""
    if not (before.facts and dest.facts and after.facts):
        return None
    stamps = [(_stamp(f.get("ctime")), _stamp(f.get("mtime"))) for f in (before.facts, dest.facts, after.facts)]
    if any(s is None for pair in stamps for s in pair):
        return None
    (c1, m1), (c2, m2), (c3, m3) = stamps
    assert c1 is not None and c2 is not None and c3 is not None and m1 is not None and m2 is not None
    assert m3 is not None
    if not (c1 <= c2 <= c3 and m1 <= m2 <= m3):
        return False
    return not ((c1, m1) == (c3, m3) and before.facts.get("capacity") != dest.facts.get("capacity"))
