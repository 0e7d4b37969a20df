"""vCPUs, memory and autostart of existing VMs, and their counters (one bulk libvirt call for all VMs).

Live changes stay within the maximum fixed at boot (vCPU hot-plug up to the max vCPUs, the balloon up to
the max memory). The persistent definition (``config``) may raise the maximum itself; that takes effect at
the next start.
"""

from __future__ import annotations

from typing import Any

import libvirt

from kvmkit.errors import InvalidInput, InvalidState
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.devices import affect_flags
from kvmkit.service.vms.lifecycle import domain
from kvmkit.service.vms.query import state_name

LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
CONFIG = libvirt.VIR_DOMAIN_AFFECT_CONFIG


def _applied(flags: int) -> dict[str, bool]:
    return {"live": bool(flags & LIVE), "config": bool(flags & CONFIG)}


def set_vcpus(conn: libvirt.virConnect, name: str, count: int, *, live: bool | None = None,
              config: bool | None = None) -> dict[str, Any]:
    """Set the number of vCPUs: live by hot-plug up to the running maximum, and/or in the definition
    (raising its maximum when ``count`` is above it)."""
    dom, flags = _check_vcpus(conn, name, count, live, config)
    return _apply_vcpus(dom, flags, count)


def _check_vcpus(conn: libvirt.virConnect, name: str, count: int, live: bool | None,
                 config: bool | None) -> tuple[libvirt.virDomain, int]:
    if count < 1:
        raise InvalidInput(f"invalid vcpus {count}: a VM needs at least 1 vCPU")
    dom = domain(conn, name)
    flags = affect_flags(dom, live, config, "set vCPUs")
    if flags & LIVE:
        with libvirt_errors(f"reading the vCPU maximum of VM {name}"):
            live_max = dom.vcpusFlags(LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        if count > live_max:
            raise InvalidInput(
                f"cannot set vcpus to {count} live on VM {name}: its maximum while running is {live_max}",
                hint=f"raise the maximum with `kvmkit vm set {name} --vcpus {count} --config`, then restart the VM")
    return dom, flags


def _apply_vcpus(dom: libvirt.virDomain, flags: int, count: int) -> dict[str, Any]:
    name = dom.name()
    raised = None
    if flags & CONFIG:
        with libvirt_errors(f"reading the vCPU maximum of VM {name}"):
            cfg_max = dom.vcpusFlags(CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        if count > cfg_max:
            with libvirt_errors(f"raising the vCPU maximum of VM {name} to {count}"):
                dom.setVcpusFlags(count, CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
            raised = count
    try:
        with libvirt_errors(f"setting {count} vCPUs on VM {name}"):
            if flags & LIVE:
                dom.setVcpusFlags(count, LIVE)
            if flags & CONFIG:
                dom.setVcpusFlags(count, CONFIG)
    except Exception:
        if raised is not None:  # undo the raised maximum so nothing is left half-changed
            with libvirt_errors(f"restoring the vCPU maximum of VM {name}"):
                dom.setVcpusFlags(cfg_max, CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)
        raise
    return {"name": name, "action": "set vcpus", "vcpus": count, "max_vcpus_raised_to": raised, **_applied(flags)}


def set_memory(conn: libvirt.virConnect, name: str, size_mib: int, *, live: bool | None = None,
               config: bool | None = None) -> dict[str, Any]:
    """Set the memory: live through the balloon up to the maximum, and/or in the definition (raising the
    maximum there when ``size_mib`` is above it)."""
    dom, flags = _check_memory(conn, name, size_mib, live, config)
    return _apply_memory(dom, flags, size_mib)


def _check_memory(conn: libvirt.virConnect, name: str, size_mib: int, live: bool | None,
                  config: bool | None) -> tuple[libvirt.virDomain, int]:
    if size_mib < 16:
        raise InvalidInput(f"invalid memory {size_mib} MiB: give at least 16 MiB (e.g. 512M or 1G)")
    dom = domain(conn, name)
    flags = affect_flags(dom, live, config, "set memory")
    kib = size_mib * 1024
    if flags & LIVE:
        with libvirt_errors(f"reading the memory maximum of VM {name}"):
            live_max = dom.maxMemory()
        if kib > live_max:
            raise InvalidInput(
                f"cannot set memory to {size_mib} MiB live on VM {name}: its maximum while running is "
                f"{live_max // 1024} MiB",
                hint=f"raise the maximum with `kvmkit vm set {name} --memory {size_mib}M --config`, then restart "
                     "the VM")
        if not _has_balloon(dom):
            raise InvalidState(f"cannot change the memory of VM {name} live: it has no memory balloon device",
                               hint="use --config and restart the VM")
    return dom, flags


def _apply_memory(dom: libvirt.virDomain, flags: int, size_mib: int) -> dict[str, Any]:
    name = dom.name()
    kib = size_mib * 1024
    raised = None
    cfg_max = 0
    if flags & CONFIG:
        from lxml import etree

        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
        cfg_max = _kib(root.find("memory"))
        if kib > cfg_max:
            with libvirt_errors(f"raising the maximum memory of VM {name} to {size_mib} MiB"):
                dom.setMemoryFlags(kib, CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
            raised = size_mib
    try:
        with libvirt_errors(f"setting the memory of VM {name} to {size_mib} MiB"):
            if flags & LIVE:
                dom.setMemoryFlags(kib, LIVE)
            if flags & CONFIG:
                dom.setMemoryFlags(kib, CONFIG)
    except Exception:
        if raised is not None:
            with libvirt_errors(f"restoring the maximum memory of VM {name}"):
                dom.setMemoryFlags(cfg_max, CONFIG | libvirt.VIR_DOMAIN_MEM_MAXIMUM)
        raise
    return {"name": name, "action": "set memory", "memory_mib": size_mib, "max_memory_raised_to_mib": raised,
            **_applied(flags)}


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024,
          "mb": 1000 ** 2 / 1024, "g": 1024 ** 2, "gib": 1024 ** 2, "gb": 1000 ** 3 / 1024, "t": 1024 ** 3,
          "tib": 1024 ** 3}


def _kib(el: Any) -> int:
    if el is None or not (el.text or "").strip():
        return 0
    return int(int(el.text) * _UNITS.get((el.get("unit") or "KiB").lower(), 1))


def _has_balloon(dom: libvirt.virDomain) -> bool:
    from lxml import etree

    root = etree.fromstring(dom.XMLDesc(0).encode())
    balloon = root.find("./devices/memballoon")
    return balloon is not None and balloon.get("model") != "none"


def set_resources(conn: libvirt.virConnect, name: str, *, vcpus: int | None = None, memory_mib: int | None = None,
                  autostart: bool | None = None, boot: list[str] | None = None, live: bool | None = None,
                  config: bool | None = None) -> dict[str, Any]:
    """Several changes at once (``kvmkit vm set``): every one is checked before any is applied. ``boot`` (an
    order of hd, cdrom, network) changes the definition only: it applies when the VM next starts."""
    from kvmkit.service.vms import boot_order

    if vcpus is None and memory_mib is None and autostart is None and boot is None:
        raise InvalidInput("nothing to set",
                           hint="give --vcpus N, --memory SIZE, --autostart on|off and/or --boot hd,cdrom,network")
    checked_cpu = _check_vcpus(conn, name, vcpus, live, config) if vcpus is not None else None
    checked_mem = _check_memory(conn, name, memory_mib, live, config) if memory_mib is not None else None
    if autostart is not None and not domain(conn, name).isPersistent():
        raise InvalidState(f"cannot set autostart on VM {name}: it is transient (not defined)")
    checked_boot = boot_order.check_boot(conn, name, boot, live=live, config=config) if boot is not None else None
    changes = []
    if checked_cpu is not None and vcpus is not None:
        changes.append(_apply_vcpus(*checked_cpu, vcpus))
    if checked_mem is not None and memory_mib is not None:
        changes.append(_apply_memory(*checked_mem, memory_mib))
    if autostart is not None:
        changes.append(set_autostart(conn, name, autostart))
    if checked_boot is not None and boot is not None:
        changes.append(boot_order.apply_boot(conn, checked_boot, boot))
    return {"name": name, "changes": changes}


def set_autostart(conn: libvirt.virConnect, name: str, on: bool) -> dict[str, Any]:
    """Start the VM when libvirtd starts (the host boots), or not."""
    dom = domain(conn, name)
    if not dom.isPersistent():
        raise InvalidState(f"cannot set autostart on VM {name}: it is transient (not defined)")
    with libvirt_errors(f"setting autostart of VM {name}"):
        dom.setAutostart(1 if on else 0)
    return {"name": name, "action": "set autostart", "autostart": bool(dom.autostart())}


STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
         | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)


def stats(conn: libvirt.virConnect, name: str | None = None) -> list[dict[str, Any]]:
    """CPU time, vCPUs, memory/balloon, block and NIC counters for every VM (or just ``name``), from one
    bulk libvirt call."""
    with libvirt_errors("reading VM statistics"):
        if name is None:
            records = conn.getAllDomainStats(STATS, 0)
        else:
            records = conn.domainListGetStats([domain(conn, name)], STATS, 0)
    return sorted((_flatten(dom, rec) for dom, rec in records), key=lambda r: r["name"])


def _flatten(dom: libvirt.virDomain, rec: dict[str, Any]) -> dict[str, Any]:
    """Turn libvirt's flat 'block.0.rd.bytes' keys into a JSON-friendly record."""
    out: dict[str, Any] = {
        "name": dom.name(),
        "state": state_name(rec.get("state.state", 0)),
        "cpu_time_ns": rec.get("cpu.time"),
        "cpu_user_ns": rec.get("cpu.user"),
        "cpu_system_ns": rec.get("cpu.system"),
        "vcpus": rec.get("vcpu.current"),
        "max_vcpus": rec.get("vcpu.maximum"),
        "balloon_current_kib": rec.get("balloon.current"),
        "balloon_max_kib": rec.get("balloon.maximum"),
        "balloon_rss_kib": rec.get("balloon.rss"),
        "guest_memory": {k.removeprefix("balloon."): v for k, v in rec.items()
                         if k in ("balloon.available", "balloon.usable", "balloon.unused",
                                  "balloon.disk_caches", "balloon.last-update")},
        "block": [],
        "net": [],
    }
    for i in range(rec.get("block.count", 0)):
        p = f"block.{i}."
        out["block"].append({
            "name": rec.get(p + "name"), "path": rec.get(p + "path"),
            "rd_reqs": rec.get(p + "rd.reqs"), "rd_bytes": rec.get(p + "rd.bytes"),
            "wr_reqs": rec.get(p + "wr.reqs"), "wr_bytes": rec.get(p + "wr.bytes"),
            "capacity": rec.get(p + "capacity"), "allocation": rec.get(p + "allocation"),
        })
    for i in range(rec.get("net.count", 0)):
        p = f"net.{i}."
        out["net"].append({
            "name": rec.get(p + "name"),
            "rx_bytes": rec.get(p + "rx.bytes"), "rx_pkts": rec.get(p + "rx.pkts"),
            "rx_errs": rec.get(p + "rx.errs"), "rx_drop": rec.get(p + "rx.drop"),
            "tx_bytes": rec.get(p + "tx.bytes"), "tx_pkts": rec.get(p + "tx.pkts"),
            "tx_errs": rec.get(p + "tx.errs"), "tx_drop": rec.get(p + "tx.drop"),
        })
    return out
