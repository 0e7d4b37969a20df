"""Read a guest's serial log (written by virtlogd) and wait for the micro-guest's markers.

Timeouts are failure guards, never the claim: a TCG guest on two shared cores can be many times slower
than on an idle host, so the defaults are generous (GUARD_S) and a test passes as soon as the marker is
there."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

GUARD_S = 180.0  # default wait for a marker: a micro-guest prints its first status in ~3 s when idle
STATUS_RE = re.compile(r"KVMKIT-STATUS uptime=([0-9.]+) cpus=(\d+) mem_total_kb=(\d+)")


@dataclass
class Status:
    uptime: float
    cpus: int
    mem_total_kb: int


class SerialLog:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def text(self) -> str:
        try:
            return self.path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def offset(self) -> int:
        return len(self.text())

    def wait_for(self, pattern: str, timeout: float = GUARD_S, after: int = 0) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) appears in the log past character ``after``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = rx.search(self.text(), after)
            if match:
                return match
            if time.monotonic() > deadline:
                tail = self.text()[-1500:]
                raise TimeoutError(f"'{pattern}' not in {self.path} after {timeout:.0f} s; log tail:\n{tail}")
            time.sleep(0.2)

    def statuses(self, after: int = 0) -> list[Status]:
        return [Status(float(m[1]), int(m[2]), int(m[3])) for m in STATUS_RE.finditer(self.text(), after)]

    def wait_status(self, timeout: float = GUARD_S, after: int = 0, **want: int) -> Status:
        """Wait for a status line past ``after`` whose fields match ``want`` (e.g. cpus=2)."""
        deadline = time.monotonic() + timeout
        while True:
            for st in self.statuses(after):
                if all(getattr(st, k) == v for k, v in want.items()):
                    return st
            if time.monotonic() > deadline:
                raise TimeoutError(f"no status {want} in {self.path}; last: {self.statuses(after)[-3:]}")
            time.sleep(0.3)
