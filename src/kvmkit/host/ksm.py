"""KSM (kernel same-page merging): state, statistics and the run / sleep_millisecs / pages_to_scan knobs.

``run``: 0 = stop scanning but keep merged pages, 1 = scan and merge, 2 = stop and unmerge every shared page
(the seeds' meanings). Memory saved = pages_sharing x page size. A VM opts out with
``<memoryBacking><nosharepages/></memoryBacking>`` (QEMU then does not mark its RAM mergeable).
"""

from __future__ import annotations

import os
import time
from typing import Any

from kvmkit.errors import InvalidInput, OperationFailed
from kvmkit.host import sysfs

RUN_MEANING = {0: "stopped (merged pages kept)", 1: "running (scanning and merging)",
               2: "stopped and unmerged"}
_COUNTERS = ("pages_shared", "pages_sharing", "pages_unshared", "pages_volatile", "full_scans",
             "general_profit", "ksm_zero_pages")
_KNOBS = ("run", "sleep_millisecs", "pages_to_scan", "merge_across_nodes", "max_page_sharing", "use_zero_pages")


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def available() -> bool:
    return sysfs.exists(sysfs.KSM_DIR / "run")


def _require() -> None:
    if not available():
        raise OperationFailed("KSM is not available: /sys/kernel/mm/ksm/run is missing",
                              hint="use a kernel built with CONFIG_KSM=y")


def status() -> dict[str, Any]:
    """Settings and counters; ``saved_bytes`` = pages_sharing x page size from the same reading."""
    if not available():
        return {"available": False}
    out: dict[str, Any] = {"available": True}
    for name in _KNOBS + _COUNTERS:
        path = sysfs.KSM_DIR / name
        if sysfs.exists(path):
            out[name] = sysfs.read_int(path)
    out["run_meaning"] = RUN_MEANING.get(out["run"], "unknown")
    out["page_size"] = page_size()
    out["saved_bytes"] = out.get("pages_sharing", 0) * out["page_size"]
    return out


def settings() -> dict[str, int]:
    """The writable knobs, to save and restore around a change."""
    _require()
    return {k: sysfs.read_int(sysfs.KSM_DIR / k) for k in ("run", "sleep_millisecs", "pages_to_scan")}


def configure(*, run: int | None = None, sleep_ms: int | None = None, pages_to_scan: int | None = None,
              wait_unmerge: float = 120.0) -> dict[str, Any]:
    """Change KSM settings (knobs first, then run); returns the new status plus the changes made."""
    _require()
    if run is not None and run not in RUN_MEANING:
        raise InvalidInput(f"KSM run must be 0, 1 or 2, not {run}", hint="1 enable, 0 disable, 2 unmerge")
    if sleep_ms is not None and not 0 <= sleep_ms <= 10_000_000:
        raise InvalidInput(f"--sleep-ms {sleep_ms} is out of range", hint="use 0 .. 10000000 milliseconds")
    if pages_to_scan is not None and not 1 <= pages_to_scan <= 100_000_000:
        raise InvalidInput(f"--pages-to-scan {pages_to_scan} is out of range", hint="use 1 .. 100000000 pages")
    changes: list[sysfs.Change] = []
    try:
        if sleep_ms is not None:
            changes.append(sysfs.write(sysfs.KSM_DIR / "sleep_millisecs", sleep_ms))
        if pages_to_scan is not None:
            changes.append(sysfs.write(sysfs.KSM_DIR / "pages_to_scan", pages_to_scan))
        if run is not None:
            changes.append(sysfs.write(sysfs.KSM_DIR / "run", run))
    except Exception:
        sysfs.restore(changes)  # all or nothing
        raise
    if run == 2:
        wait_unmerged(wait_unmerge)
    result = status()
    result["changed"] = [c.to_dict() for c in changes if c.before != c.after]
    return result


def wait_unmerged(timeout: float = 120.0) -> None:
    """After run=2 the kernel unmerges synchronously; wait for pages_sharing to read 0 anyway."""
    deadline = time.monotonic() + timeout
    while sysfs.read_int(sysfs.KSM_DIR / "pages_sharing") > 0:
        if time.monotonic() > deadline:
            raise OperationFailed(f"KSM still shares pages {timeout:.0f} s after unmerge (run=2)",
                                  hint="some memory may be locked; check /sys/kernel/mm/ksm/pages_sharing")
        time.sleep(0.2)


def restore(saved: dict[str, int]) -> None:
    """Put knobs saved by :func:`settings` back (run last, so scanning stops with the old cadence)."""
    for key in ("sleep_millisecs", "pages_to_scan", "run"):
        if key in saved and sysfs.read_int(sysfs.KSM_DIR / key) != saved[key]:
            sysfs.write(sysfs.KSM_DIR / key, saved[key])


def domain_shares_pages(xml: str) -> bool:
    """False when a domain opted out of KSM with <memoryBacking><nosharepages/>."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    return root.find("memoryBacking/nosharepages") is None
