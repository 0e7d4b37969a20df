"""What a host is and carries, asked through its libvirt connection (so the same for local and remote hosts):
versions, CPU model and cores, memory and free memory, its VMs and what the running ones use."""

from __future__ import annotations

from typing import Any

import libvirt

from kvmkit.hypervisor.errors import libvirt_errors

SHUT_OFF = 5


def version(number: int) -> str:
    """libvirt's packed version (major * 1e6 + minor * 1e3 + release) as ``9.0.0``."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def host_facts(conn: libvirt.virConnect) -> dict[str, Any]:
    """Versions, CPU, memory and VM usage of the host ``conn`` talks to (a handful of round trips)."""
    from lxml import etree

    from kvmkit.service.vms.rows import LIST_STATS

    with libvirt_errors("reading the host's facts"):
        arch, memory_mib, cpus, _mhz, nodes, sockets, cores, threads = conn.getInfo()
        caps = etree.fromstring(conn.getCapabilities().encode())
        free_mib = conn.getFreeMemory() // 2**20
        records = conn.getAllDomainStats(LIST_STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
        lib, qemu = conn.getLibVersion(), conn.getVersion()
        hostname = conn.getHostname()
    active = [s for _dom, s in records if s.get("state.state", SHUT_OFF) != SHUT_OFF]
    return {
        "hostname": hostname,
        "libvirt_version": version(lib),
        "qemu_version": version(qemu),
        "arch": arch,
        "cpu_model": caps.findtext("host/cpu/model"),
        "cpu_vendor": caps.findtext("host/cpu/vendor"),
        "cpus": cpus,
        "cores": max(1, nodes * sockets * cores),  # physical cores: what vCPU overcommit is counted against
        "threads_per_core": threads,
        "numa_nodes": nodes,
        "memory_mib": memory_mib,
        "free_memory_mib": free_mib,
        "vms": len(records),
        "vms_running": len(active),
        "vcpus_running": sum(int(s.get("vcpu.current", 0)) for s in active),
        "memory_running_mib": sum(int(s.get("balloon.current", 0)) for s in active) // 1024,
        "host_uuid": caps.findtext("host/uuid"),
    }


def guest_type(conn: libvirt.virConnect) -> tuple[str, str]:
    """(kvm|qemu, why) as probed on that host (kvmkit.host.virt_type; cached per host)."""
    from kvmkit.host.virt_type import choose_virt_type

    return choose_virt_type(None, conn)
