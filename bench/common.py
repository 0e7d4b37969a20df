"""Shared pieces of the benchmark harness: naming, timing, statistics, waiting, cleanup, machine facts.

Everything the harness creates is named with ``PREFIX`` (domains, volumes, pools) or lives under
``WORK`` (files), so one sweep removes it all, also after a crashed run.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

# KVMKIT_BENCH_PREFIX / KVMKIT_BENCH_DIR let two runs share a host without sweeping each other's objects
PREFIX = os.environ.get("KVMKIT_BENCH_PREFIX", "kb-")
REPO = Path(__file__).resolve().parent.parent
WORK = Path(os.environ.get("KVMKIT_BENCH_DIR", "/var/lib/kvmkit/bench"))
VENV_BIN = REPO / ".venv" / "bin"
KVMKIT = str(VENV_BIN / "kvmkit")
URI = "qemu:///system"
READY = "KVMKIT-GUEST-READY"


class Unavailable(Exception):
    """A side of a scenario cannot run here (feature not there yet, libvirt refuses it, no disk space)."""


@dataclass
class Series:
    """Repeated measurements of one thing (seconds, MiB, req/s ...)."""

    samples: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.samples), max(self.samples)


@dataclass
class Row:
    """One line of RESULTS.md: kvmkit beside its peer for one scenario case and metric."""

    scenario: str
    case: str
    metric: str
    unit: str  # "s", "ms", "MiB", "req/s", "count"
    kvmkit: Series | None = None
    peer: Series | None = None
    peer_name: str = ""
    target: str = ""
    kvmkit_missing: str = ""  # why kvmkit's side has no figure
    peer_missing: str = ""
    higher_is_better: bool = False
    met: Callable[[Row], bool] | None = None  # evaluates the target once kvmkit has a figure

    def k(self) -> float:
        return self.kvmkit.median if self.kvmkit and self.kvmkit.samples else float("nan")

    def p(self) -> float:
        return self.peer.median if self.peer and self.peer.samples else float("nan")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd: Sequence[str], *, timeout: float = 600, env: dict[str, str] | None = None,
        check: bool = True) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a command, return (wall seconds, result); raise RuntimeError with its stderr when it fails."""
    full_env = {**os.environ, **(env or {})}
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=full_env)
    elapsed = time.perf_counter() - t0
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exit {proc.returncode}: "
                           f"{(proc.stderr or proc.stdout).strip()[-600:]}")
    return elapsed, proc


def wait_for_text(path: Path, text: str, t0: float, timeout: float = 90.0, poll: float = 0.01) -> float:
    """Seconds from ``t0`` (perf_counter) until ``text`` appears in the file at ``path``."""
    deadline = time.perf_counter() + timeout
    needle = text.encode()
    while True:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if needle in path.read_bytes():
                return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            raise TimeoutError(f"'{text}' did not appear in {path} within {timeout:.0f} s")
        time.sleep(poll)


def wait_running(conn: libvirt.virConnect, names: Sequence[str], t0: float, timeout: float = 120.0) -> float:
    """Seconds from ``t0`` until every named domain exists and is running."""
    deadline = time.perf_counter() + timeout
    want = set(names)
    while True:
        running = {d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_RUNNING)}
        if want <= running:
            return time.perf_counter() - t0
        if time.perf_counter() > deadline:
            raise TimeoutError(f"not running after {timeout:.0f} s: {sorted(want - running)}")
        time.sleep(0.01)


def repeat(n: int, fn: Callable[[int], float]) -> Series:
    return Series([fn(i) for i in range(n)])


def sweep(conn: libvirt.virConnect, prefix: str = PREFIX, *, files: bool = True) -> int:
    """Remove every domain, volume, pool and network named with ``prefix`` (and with ``files`` the work
    directory and serial logs); return how many libvirt objects were removed."""
    removed = 0
    for dom in conn.listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isActive():
                dom.destroy()
        with contextlib.suppress(libvirt.libvirtError):
            if dom.isPersistent():
                for snap in dom.listAllSnapshots():
                    with contextlib.suppress(libvirt.libvirtError):
                        snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        removed += 1
    for pool in conn.listAllStoragePools():
        with contextlib.suppress(libvirt.libvirtError):
            if pool.isActive():
                pool.refresh(0)
                for vol in pool.listAllVolumes():
                    if vol.name().startswith(prefix):
                        with contextlib.suppress(libvirt.libvirtError):
                            vol.delete(0)
                            removed += 1
        if pool.name().startswith(prefix):
            with contextlib.suppress(libvirt.libvirtError):
                if pool.isActive():
                    pool.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                pool.undefine()
            removed += 1
    for net in conn.listAllNetworks():
        if net.name().startswith(prefix):
            with contextlib.suppress(libvirt.libvirtError):
                if net.isActive():
                    net.destroy()
                net.undefine()
            removed += 1
    if not files:
        return removed
    for log_file in Path("/var/log/kvmkit").glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            log_file.unlink()
    if WORK.exists():
        shutil.rmtree(WORK, ignore_errors=True)
    return removed


def reconnect(timeout: float = 60.0) -> libvirt.virConnect:
    """Open qemu:///system, waiting for libvirtd to come back when it is restarting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return libvirt.open(URI)
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine(conn: libvirt.virConnect, virt_type: str) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])

    def ver(v: int) -> str:
        return f"{v // 1000000}.{v // 1000 % 1000}.{v % 1000}"

    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "libvirt": ver(conn.getLibVersion()),
        "QEMU": ver(conn.getVersion()),
        "virt type": virt_type,
        "disk": f"{shutil.disk_usage('/var/lib').free / 2**30:.0f} GiB free on /var/lib",
    }


@dataclass
class Ctx:
    """What every scenario gets: the connection, the micro-guest, the run's settings."""

    _conn: libvirt.virConnect
    virt_type: str
    kernel: str
    initrd: str
    cmdline: str
    quick: bool
    repeats: int
    notes: list[str] = field(default_factory=list)
    sections: dict[str, str] = field(default_factory=dict)  # title -> preformatted text (RESULTS.md)

    @property
    def conn(self) -> libvirt.virConnect:
        """The connection, opened again when libvirtd went away (e.g. restarted by someone else)."""
        with contextlib.suppress(libvirt.libvirtError):
            if self._conn.isAlive():
                return self._conn
        self._conn = reconnect()
        return self._conn

    def path(self, *parts: str) -> Path:
        p = WORK.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p
