"""Readings for metrics: every domain's counters from ONE bulk libvirt call, and the host's CPU, memory, KSM
and huge pages from procfs/sysfs.

The exporter (``/metrics``) and the history sampler both read through here, so both see the same numbers.
``read_domains`` asks libvirt once (``getAllDomainStats``) for every domain, however many there are; the
connection-level facts (host name, versions) are asked once per connection and remembered.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import libvirt

from kvmkit.hypervisor.errors import libvirt_errors

DOMAIN_STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
                | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_VCPU
                | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)
# do not wait for domains busy in a job (a migration, a long block job): their job-bound stats are left out
NOWAIT = getattr(libvirt, "VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT", 0)

# /proc/stat's aggregate "cpu" line, in order (guest and guest_nice are already counted in user and nice)
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass
class Domain:
    """One domain's bulk stats (libvirt's flat keys, e.g. ``block.0.rd.bytes``)."""

    name: str
    uuid: str
    stats: dict[str, Any]

    @property
    def state(self) -> int:
        return int(self.stats.get("state.state", 0))

    @property
    def running(self) -> bool:
        return self.state == libvirt.VIR_DOMAIN_RUNNING

    def get(self, key: str, default: Any = None) -> Any:
        return self.stats.get(key, default)

    def devices(self, kind: str) -> list[dict[str, Any]]:
        """``block`` or ``net`` entries as ``{"name": ..., "rd.bytes": ...}`` (keys without the prefix)."""
        out = []
        for i in range(int(self.stats.get(f"{kind}.count", 0))):
            prefix = f"{kind}.{i}."
            out.append({k[len(prefix):]: v for k, v in self.stats.items() if k.startswith(prefix)})
        return out

    def vcpus(self) -> list[tuple[int, dict[str, Any]]]:
        """``(number, {"state", "time", "wait", "delay"})`` for every vCPU libvirt reports."""
        found: dict[int, dict[str, Any]] = {}
        for key, value in self.stats.items():
            parts = key.split(".")
            if len(parts) == 3 and parts[0] == "vcpu" and parts[1].isdigit():
                found.setdefault(int(parts[1]), {})[parts[2]] = value
        return sorted(found.items())


def read_domains(conn: libvirt.virConnect) -> list[Domain]:
    """Every domain (running or not) with its counters: one ``getAllDomainStats`` call. ``name()`` and
    ``UUIDString()`` of the returned domains are answered from the handle, without a call to libvirtd."""
    with libvirt_errors("reading domain statistics"):
        records = conn.getAllDomainStats(DOMAIN_STATS, NOWAIT)
    return [Domain(dom.name(), dom.UUIDString(), stats) for dom, stats in records]


@dataclass
class ConnInfo:
    """What a connection says about its host, asked once per connection."""

    host: str
    local: bool  # the connection's host is this machine: procfs/sysfs describe it
    hypervisor_version: str
    libvirtd_version: str
    library_version: str


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def conn_info(conn: libvirt.virConnect) -> ConnInfo:
    """Host name and versions of ``conn``'s host (connection-level calls, none per domain)."""
    with libvirt_errors("reading the host's name and versions"):
        host = conn.getHostname()
        uri = conn.getURI()
        hv = conn.getVersion()
        daemon = conn.getLibVersion()
    return ConnInfo(host=host, local=not urlparse(uri).hostname, hypervisor_version=_version(hv),
                    libvirtd_version=_version(daemon), library_version=_version(libvirt.getVersion()))


class ConnInfoCache:
    """:func:`conn_info` asked once per connection (a reconnect asks again)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Any = None
        self._info: ConnInfo | None = None

    def get(self, conn: libvirt.virConnect) -> ConnInfo:
        with self._lock:
            if conn is self._conn and self._info is not None:
                return self._info
        info = conn_info(conn)
        with self._lock:
            self._conn, self._info = conn, info
        return info


@dataclass
class HostReading:
    """This machine's counters (procfs/sysfs): CPU seconds per mode, memory, KSM and huge pages."""

    cpus: int
    cpu_seconds: dict[str, float]  # mode -> seconds since boot, summed over all CPUs
    mem_total_kib: int
    mem_free_kib: int
    mem_available_kib: int
    ksm: dict[str, int] = field(default_factory=dict)  # pages_shared, pages_sharing, saved_bytes (when available)
    hugepages: list[dict[str, Any]] = field(default_factory=list)  # size, total, free per page size

    @property
    def cpu_busy(self) -> float:
        return sum(v for k, v in self.cpu_seconds.items() if k not in ("idle", "iowait"))

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu_seconds.values())


def read_host() -> HostReading:
    """Read /proc/stat, /proc/meminfo, KSM and huge pages (kvmkit.host) once."""
    from kvmkit.host import hugepages, ksm, sysfs

    tick = os.sysconf("SC_CLK_TCK")
    cpu_seconds: dict[str, float] = {}
    cpus = 0
    for line in sysfs.read("/proc/stat").splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            cpu_seconds = {mode: int(v) / tick for mode, v in zip(CPU_MODES, parts[1:], strict=False)}
        elif parts and parts[0].startswith("cpu") and parts[0][3:].isdigit():
            cpus += 1
    mem = sysfs.meminfo()
    status = ksm.status()
    keys = ("pages_shared", "pages_sharing", "saved_bytes", "run") if status.get("available") else ()
    ksm_values: dict[str, int] = {k: int(status[k]) for k in keys if k in status}
    try:
        pages = [{"size": p["size"], "total": p["total"], "free": p["free"]} for p in hugepages.pools()]
    except Exception:
        pages = []  # a kernel without huge pages
    return HostReading(cpus=cpus, cpu_seconds=cpu_seconds, mem_total_kib=mem.get("MemTotal", 0),
                       mem_free_kib=mem.get("MemFree", 0), mem_available_kib=mem.get("MemAvailable", 0),
                       ksm=ksm_values, hugepages=pages)
