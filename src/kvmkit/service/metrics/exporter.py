"""``/metrics`` in Prometheus text format: a custom prometheus_client collector that reads at scrape time.

Per-domain series keep the names and labels of the libvirt exporter lineage that started with
kumina/libvirt_exporter (and continued as rumanzo/libvirt_exporter_improved and AlexZzz/libvirt-exporter:
``domain`` on every series, ``target_device`` on disks and NICs, ``vcpu`` on vCPUs, values in bytes and
seconds), plus a ``host`` label, so dashboards built for those exporters work unchanged. kvmkit's own
series are ``kvmkit_*``. Every per-domain number comes from one bulk ``getAllDomainStats`` call per scrape;
nothing is cached between scrapes, so nothing goes stale.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kvmkit.service.metrics.collect import ConnInfo, ConnInfoCache, Domain, HostReading, read_domains, read_host
from kvmkit.service.metrics.requests import RequestCounter
from kvmkit.service.vms.rows import STATES

log = logging.getLogger("kvmkit.metrics")

D = ["host", "domain"]
# (libvirt bulk key, series name, help, kind, scale)
BLOCK = [
    ("rd.bytes", "libvirt_domain_block_stats_read_bytes_total", "Bytes read from the disk.", "c", 1),
    ("rd.reqs", "libvirt_domain_block_stats_read_requests_total", "Read requests to the disk.", "c", 1),
    ("rd.times", "libvirt_domain_block_stats_read_time_seconds_total", "Time spent reading, seconds.", "c", 1e-9),
    ("wr.bytes", "libvirt_domain_block_stats_write_bytes_total", "Bytes written to the disk.", "c", 1),
    ("wr.reqs", "libvirt_domain_block_stats_write_requests_total", "Write requests to the disk.", "c", 1),
    ("wr.times", "libvirt_domain_block_stats_write_time_seconds_total", "Time spent writing, seconds.", "c", 1e-9),
    ("fl.reqs", "libvirt_domain_block_stats_flush_requests_total", "Flush requests to the disk.", "c", 1),
    ("fl.times", "libvirt_domain_block_stats_flush_time_seconds_total", "Time spent flushing, seconds.", "c", 1e-9),
    ("allocation", "libvirt_domain_block_stats_allocation", "Highest written offset of the disk, bytes.", "g", 1),
    ("capacity", "libvirt_domain_block_stats_capacity_bytes", "Size of the disk as the guest sees it.", "g", 1),
    ("physical", "libvirt_domain_block_stats_physicalsize_bytes", "Size of the disk's file or device on the host.",
     "g", 1),
]
NET = [
    (f"{way}.{key}", f"libvirt_domain_interface_stats_{name}_{what}_total", f"{what.capitalize()} {verb} by the NIC.")
    for way, name, verb in (("rx", "receive", "received"), ("tx", "transmit", "transmitted"))
    for key, what in (("bytes", "bytes"), ("pkts", "packets"), ("errs", "errors"), ("drop", "drops"))
]
# balloon.* (KiB unless scale says otherwise) -> libvirt_domain_memory_stats_*
MEMORY = [
    ("major_fault", "major_fault_total", "Major page faults in the guest.", "c", 1),
    ("minor_fault", "minor_fault_total", "Minor page faults in the guest.", "c", 1),
    ("unused", "unused_bytes", "Memory the guest leaves unused.", "g", 1024),
    ("available", "available_bytes", "Memory the guest can use (its total as it sees it).", "g", 1024),
    ("current", "actual_balloon_bytes", "Current balloon size: memory the guest has now.", "g", 1024),
    ("rss", "rss_bytes", "Resident set size of the QEMU process on the host.", "g", 1024),
    ("usable", "usable_bytes", "Memory the guest could use without swapping (its MemAvailable).", "g", 1024),
    ("disk_caches", "disk_cache_bytes", "Guest memory holding disk caches (quickly reclaimable).", "g", 1024),
]


def _family(name: str, doc: str, labels: list[str], kind: str) -> Any:
    return (CounterMetricFamily if kind == "c" else GaugeMetricFamily)(name, doc, labels=labels)


def domain_families(domains: list[Domain], host: str, *, bridges: Callable[[str], str] | None = None) -> list[Metric]:
    """Every per-domain series for ``domains`` (read by one bulk call)."""
    g, c = GaugeMetricFamily, CounterMetricFamily
    meta = g("libvirt_domain_info_meta", "Domain identity (value 1).", labels=[*D, "uuid"])
    max_mem = g("libvirt_domain_info_maximum_memory_bytes", "Maximum memory of the domain, bytes.", labels=D)
    mem = g("libvirt_domain_info_memory_usage_bytes", "Memory the domain has now (balloon), bytes.", labels=D)
    vcpus = g("libvirt_domain_info_virtual_cpus", "vCPUs of the domain.", labels=D)
    cpu = c("libvirt_domain_info_cpu_time_seconds_total", "CPU time the domain used, seconds.", labels=D)
    vstate = g("libvirt_domain_info_vstate", "Domain state: 0 no state, 1 running, 2 blocked, 3 paused, "
               "4 shutting down, 5 shut off, 6 crashed, 7 suspended by guest power management.", labels=D)
    V = [*D, "vcpu"]
    vcpu_state = g("libvirt_domain_vcpu_state", "vCPU state: 0 offline, 1 running, 2 blocked.", labels=V)
    vcpu_time = c("libvirt_domain_vcpu_time_seconds_total", "CPU time the vCPU used, seconds.", labels=V)
    vcpu_wait = c("libvirt_domain_vcpu_wait_seconds_total", "Time the vCPU waited for I/O, seconds.", labels=V)
    vcpu_delay = c("libvirt_domain_vcpu_delay_seconds_total",
                   "Time the vCPU was runnable but waited for a host CPU (steal in the guest), seconds.", labels=V)
    B = [*D, "target_device"]
    block_meta = g("libvirt_domain_block_meta", "Disk identity (value 1): its source on the host.",
                   labels=[*B, "source_file"])
    block = [(key, _family(name, doc, B, kind), scale) for key, name, doc, kind, scale in BLOCK]
    iface_meta = g("libvirt_domain_interface_meta", "NIC identity (value 1): the bridge it is attached to.",
                   labels=[*D, "source_bridge", "target_device"])
    net = [(key, c(name, doc, labels=B)) for key, name, doc in NET]
    memory = [(key, _family(f"libvirt_domain_memory_stats_{name}", doc, D, kind), scale)
              for key, name, doc, kind, scale in MEMORY]
    used_pct = g("libvirt_domain_memory_stats_used_percent", "Guest memory in use, percent of available.",
                 labels=D)
    for d in domains:
        lv = [host, d.name]
        meta.add_metric([*lv, d.uuid], 1)
        max_mem.add_metric(lv, d.get("balloon.maximum", 0) * 1024)
        mem.add_metric(lv, d.get("balloon.current", 0) * 1024)
        vcpus.add_metric(lv, d.get("vcpu.current", 0))
        cpu.add_metric(lv, d.get("cpu.time", 0) / 1e9)
        vstate.add_metric(lv, d.state)
        if not d.running:
            continue
        for number, v in d.vcpus():
            vl = [*lv, str(number)]
            if "state" in v:
                vcpu_state.add_metric(vl, v["state"])
            for key, fam in (("time", vcpu_time), ("wait", vcpu_wait), ("delay", vcpu_delay)):
                if key in v:
                    fam.add_metric(vl, v[key] / 1e9)
        for disk in d.devices("block"):
            dev = str(disk.get("name", ""))  # top images only: backing images are listed with the BACKING flag
            block_meta.add_metric([*lv, dev, str(disk.get("path", ""))], 1)
            for key, fam, scale in block:
                if key in disk:
                    fam.add_metric([*lv, dev], disk[key] * scale)
        for nic in d.devices("net"):
            dev = str(nic.get("name", ""))
            bridge = bridges(dev) if bridges else ""
            if bridge:
                iface_meta.add_metric([*lv, bridge, dev], 1)
            for key, fam in net:
                if key in nic:
                    fam.add_metric([*lv, dev], nic[key])
        for key, fam, scale in memory:
            if f"balloon.{key}" in d.stats:
                fam.add_metric(lv, d.stats[f"balloon.{key}"] * scale)
        available, usable = d.get("balloon.available"), d.get("balloon.usable")
        if available and usable is not None:
            used_pct.add_metric(lv, (available - usable) * 100 / available)
    families = [meta, max_mem, mem, vcpus, cpu, vstate, vcpu_state, vcpu_time, vcpu_wait, vcpu_delay, block_meta,
                *(f for _, f, _ in block), iface_meta, *(f for _, f in net), *(f for _, f, _ in memory), used_pct]
    return [f for f in families if f.samples]


def vm_count_family(domains: list[Domain], host: str) -> Metric:
    fam = GaugeMetricFamily("kvmkit_vms", "VMs on the host by state.", labels=["host", "state"])
    counts = dict.fromkeys(STATES.values(), 0)
    for d in domains:
        name = STATES.get(d.state, "nostate")
        counts[name] += 1
    for state, n in counts.items():
        fam.add_metric([host, state], n)
    return fam


def host_families(r: HostReading, host: str) -> list[Metric]:
    """kvmkit_host_*: CPU seconds per mode, memory, KSM and huge pages of this machine."""
    g, h = GaugeMetricFamily, [host]
    cpus = g("kvmkit_host_cpus", "Online CPUs of the host.", labels=["host"])
    cpus.add_metric(h, r.cpus)
    cpu = CounterMetricFamily("kvmkit_host_cpu_seconds_total", "CPU time of the host per mode (all CPUs), seconds.",
                              labels=["host", "mode"])
    for mode, seconds in r.cpu_seconds.items():
        cpu.add_metric([host, mode], seconds)
    out: list[Metric] = [cpus, cpu]
    for what, kib in (("total", r.mem_total_kib), ("free", r.mem_free_kib), ("available", r.mem_available_kib)):
        fam = g(f"kvmkit_host_memory_{what}_bytes", f"Host memory {what} (/proc/meminfo), bytes.", labels=["host"])
        fam.add_metric(h, kib * 1024)
        out.append(fam)
    for key, name, doc in (("pages_shared", "kvmkit_host_ksm_pages_shared", "KSM: shared pages in use."),
                           ("pages_sharing", "kvmkit_host_ksm_pages_sharing", "KSM: pages deduplicated onto them."),
                           ("saved_bytes", "kvmkit_host_ksm_saved_bytes", "KSM: memory saved (pages_sharing x page "
                                                                         "size), bytes."),
                           ("run", "kvmkit_host_ksm_run", "KSM run mode: 0 stopped, 1 merging, 2 unmerged.")):
        if key in r.ksm:
            fam = g(name, doc, labels=["host"])
            fam.add_metric(h, r.ksm[key])
            out.append(fam)
    total = g("kvmkit_host_hugepages_total", "Huge pages reserved per page size.", labels=["host", "size"])
    free = g("kvmkit_host_hugepages_free", "Huge pages free per page size.", labels=["host", "size"])
    for p in r.hugepages:
        total.add_metric([host, p["size"]], p["total"])
        free.add_metric([host, p["size"]], p["free"])
    return [*out, total, free]


def request_family(counter: RequestCounter) -> Metric:
    fam = CounterMetricFamily("kvmkit_api_requests_total", "API requests answered, by method, route template and "
                              "status.", labels=["method", "route", "status"])
    for (method, route, status), n in counter.snapshot():
        fam.add_metric([method, route, status], n)
    return fam


def task_family(counts: list[tuple[str, str, int]]) -> Metric:
    fam = GaugeMetricFamily("kvmkit_tasks", "Tasks recorded, by kind and state.", labels=["kind", "state"])
    for kind, state, n in counts:
        fam.add_metric([kind, state], n)
    return fam


def task_counts(store: Any) -> list[tuple[str, str, int]]:
    """``(kind, state, count)`` of the tasks in the store (one grouped query)."""
    from sqlalchemy import func, select

    from kvmkit.store.models import Task

    with store.session() as s:
        rows = s.execute(select(Task.kind, Task.state, func.count()).group_by(Task.kind, Task.state)).all()
    return sorted((str(k), str(st), int(n)) for k, st, n in rows)


def bridge_of(device: str) -> str:
    """The bridge a host network device (a VM's tap, e.g. vnet3) is enslaved to, from sysfs ('' if none)."""
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{device}/master"))
    except OSError:
        return ""


class Exporter(Collector):
    """Reads libvirt (one bulk call), the host and kvmkit's counters at every scrape."""

    def __init__(self, get_conn: Callable[[], Any], *, requests: RequestCounter | None = None,
                 tasks: Callable[[], list[tuple[str, str, int]]] | None = None) -> None:
        self._get_conn = get_conn
        self._requests = requests
        self._tasks = tasks
        self._info = ConnInfoCache()
        self._last: ConnInfo | None = None

    def host_name(self) -> str:
        """The name of the connection's host (the ``host`` label)."""
        return self._info.get(self._get_conn()).host

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("libvirt_up", "1 when kvmkit read libvirt's statistics in this scrape.",
                               labels=["host"])
        domains: list[Domain] | None = None
        try:
            conn = self._get_conn()
            self._last = self._info.get(conn)
            domains = read_domains(conn)
        except Exception as err:
            log.warning("metrics: libvirt not readable: %s", err)
        info = self._last
        host = info.host if info else ""
        up.add_metric([host], 1 if domains is not None else 0)
        yield up
        if info is not None:
            versions = GaugeMetricFamily("libvirt_versions_info", "Versions of the virtualization components "
                                         "(value 1).", labels=["host", "hypervisor_running", "libvirtd_running",
                                                               "libvirt_library"])
            versions.add_metric([host, info.hypervisor_version, info.libvirtd_version, info.library_version], 1)
            yield versions
        if domains is not None:
            bridges = bridge_of if info is not None and info.local else None
            yield from domain_families(domains, host, bridges=bridges)
            yield vm_count_family(domains, host)
        if info is not None and info.local:
            try:
                yield from host_families(read_host(), host)
            except Exception as err:
                log.warning("metrics: host counters not readable: %s", err)
        if self._requests is not None:
            yield request_family(self._requests)
        if self._tasks is not None:
            try:
                yield task_family(self._tasks())
            except Exception as err:
                log.warning("metrics: task counts not readable: %s", err)


def render(collector: Collector) -> tuple[bytes, str]:
    """The Prometheus text exposition (format 0.0.4, which every Prometheus reads) and its content type."""
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4
