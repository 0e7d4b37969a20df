"""The sampler: a thread of the server that every interval (10 s by default, ``KVMKIT_METRICS_INTERVAL``) reads
every VM (one bulk libvirt call) and the host, turns counters into rates, and stores one point per running
VM and one for the host (kvmkit.service.metrics.history), then rolls up and prunes the history.

Rates need two readings: a VM's first reading (after the server or the VM started, or when a counter went
backwards: the VM restarted) stores nothing. CPU is in percent of the VM's vCPUs (100 = all busy), the host's
in percent of all its CPUs. A VM's memory used is the guest's own figure (available - usable, from the
balloon driver's statistics) when the guest reports it, else the host RSS of its QEMU process.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvmkit.errors import InvalidInput
from kvmkit.service.metrics.collect import ConnInfoCache, Domain, HostReading, read_domains, read_host
from kvmkit.service.metrics.history import History, Sample

log = logging.getLogger("kvmkit.metrics")
DEFAULT_INTERVAL = 10.0
ENV = "KVMKIT_METRICS_INTERVAL"


def interval_from_env() -> float:
    """The sampling interval in seconds from ``KVMKIT_METRICS_INTERVAL`` (default 10; 0 turns sampling off)."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text.removesuffix("s"))
    except ValueError:
        value = -1
    if value != 0 and not 1 <= value <= 3600:
        raise InvalidInput(f"invalid {ENV}={text!r}",
                           hint="give the sampling interval in seconds, 1 to 3600 (e.g. 10), or 0 to turn it off")
    return value


@dataclass
class _Counters:
    at: float  # time.monotonic() of the reading
    cpu_ns: int
    disk_rd: int
    disk_wr: int
    net_rx: int
    net_tx: int


def _counters(d: Domain, at: float) -> _Counters:
    blocks = d.devices("block")  # top images only (backing images need the BACKING flag)
    nets = d.devices("net")
    return _Counters(at, int(d.get("cpu.time", 0)), sum(int(b.get("rd.bytes", 0)) for b in blocks),
                     sum(int(b.get("wr.bytes", 0)) for b in blocks), sum(int(n.get("rx.bytes", 0)) for n in nets),
                     sum(int(n.get("tx.bytes", 0)) for n in nets))


def _memory(d: Domain) -> tuple[int | None, int | None]:
    """(used KiB, total KiB) of a running VM."""
    total = d.get("balloon.current")
    available, usable = d.get("balloon.available"), d.get("balloon.usable")
    if available is not None and usable is not None:
        return int(available) - int(usable), total
    rss = d.get("balloon.rss")
    return (int(rss) if rss is not None else None), total


def vm_sample(d: Domain, now: _Counters, before: _Counters | None) -> Sample | None:
    """The sample of a running VM from two readings; None without a usable earlier one."""
    if before is None:
        return None
    dt = now.at - before.at
    deltas = [now.cpu_ns - before.cpu_ns, now.disk_rd - before.disk_rd, now.disk_wr - before.disk_wr,
              now.net_rx - before.net_rx, now.net_tx - before.net_tx]
    if dt <= 0 or min(deltas) < 0:
        return None  # the VM restarted (counters went back): start again from this reading
    vcpus = max(int(d.get("vcpu.current", 1) or 1), 1)
    used, total = _memory(d)
    return Sample(cpu_percent=min(deltas[0] / (dt * 1e9 * vcpus) * 100, 100.0), mem_used_kib=used,
                  mem_total_kib=total, disk_rd=deltas[1] / dt, disk_wr=deltas[2] / dt, net_rx=deltas[3] / dt,
                  net_tx=deltas[4] / dt)


def host_sample(now: HostReading, before: HostReading | None, vms: dict[str, Sample], running: int) -> Sample:
    cpu = None
    if before is not None and now.cpu_total > before.cpu_total:
        cpu = (now.cpu_busy - before.cpu_busy) / (now.cpu_total - before.cpu_total) * 100

    def total(attr: str) -> float:
        return sum(getattr(v, attr) or 0 for v in vms.values())

    saved = now.ksm.get("saved_bytes")
    return Sample(cpu_percent=cpu, mem_used_kib=now.mem_total_kib - now.mem_available_kib,
                  mem_total_kib=now.mem_total_kib, disk_rd=total("disk_rd"), disk_wr=total("disk_wr"),
                  net_rx=total("net_rx"), net_tx=total("net_tx"),
                  ksm_saved_kib=saved // 1024 if saved is not None else None, vms_running=running)


class Sampler:
    """Samples every ``interval`` seconds in a daemon thread until :meth:`stop`."""

    def __init__(self, store: Any, get_conn: Callable[[], Any], *, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.history = History(store)
        self.interval = interval
        self._get_conn = get_conn
        self._clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._info = ConnInfoCache()
        self._before: dict[str, _Counters] = {}  # by domain UUID
        self._host_before: HostReading | None = None
        self._last_ts = 0
        self._leased: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.ticks = 0
        self.last_error: str | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="kvmkit-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        for host in self._leased:
            try:
                self.history.release(host, self.owner)
            except Exception:
                log.debug("metrics: releasing the lease of %s failed", host, exc_info=True)

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
                self.last_error = None
            except Exception as err:
                self.last_error = str(err)
                log.warning("metrics: sampling failed: %s", err)
            next_at += self.interval
            now = time.monotonic()
            if next_at < now:  # late (a slow libvirtd): skip the missed ticks instead of running them back to back
                next_at = now + self.interval
            self._stop.wait(next_at - now)

    def tick(self) -> int:
        """Take one sample (if this server holds the host's lease); returns the rows stored."""
        conn = self._get_conn()
        host = self._info.get(conn).host
        ts = int(self._clock())
        if not self.history.acquire(host, self.owner, ts, ttl=int(max(3 * self.interval, 30)),
                                    interval=max(int(self.interval), 1)):
            self._before.clear()  # another server samples this host: start afresh if it ever stops
            self._host_before = None
            self._leased.discard(host)
            return 0
        self._leased.add(host)
        at = time.monotonic()
        domains = read_domains(conn)
        running = [d for d in domains if d.running]
        vms: dict[str, Sample] = {}
        seen: dict[str, _Counters] = {}
        for d in running:
            now = _counters(d, at)
            sample = vm_sample(d, now, self._before.get(d.uuid))
            if sample is not None:
                vms[d.name] = sample
            seen[d.uuid] = now
        self._before = seen
        hs = None
        if self._info.get(conn).local:
            reading = read_host()
            hs = host_sample(reading, self._host_before, vms, len(running))
            self._host_before = reading
        if ts <= self._last_ts:
            return 0  # two ticks in one second (or the clock went back): store nothing, rates go on from here
        self._last_ts = ts
        written = self.history.record(host, ts, vms, hs)
        self.history.maintain(host, ts, grace=int(self.interval) + 5)
        self.ticks += 1
        return written
