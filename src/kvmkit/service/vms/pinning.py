"""CPU pinning of VMs: vcpupin and emulatorpin, live and persistent, automatic NUMA-aware choice, and
where running VMs are placed (which host CPUs and NUMA nodes they use)."""

from __future__ import annotations

from typing import Any

import libvirt

from kvmkit.errors import InvalidInput, InvalidState
from kvmkit.host.topology import format_cpulist, host_topology, parse_cpulist
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain

_lookup = domain


def _flags(dom, live: bool | None, config: bool | None) -> int:
    """AFFECT_LIVE when running (unless live=False), AFFECT_CONFIG when persistent (unless config=False)."""
    active, persistent = bool(dom.isActive()), bool(dom.isPersistent())
    if live is None and config is None:
        live, config = active, persistent
    live, config = bool(live), bool(config)
    if live and not active:
        raise InvalidState(f"VM {dom.name()} is not running, so --live cannot apply",
                           hint="start it, or use --config to change the saved definition only")
    if config and not persistent:
        raise InvalidState(f"VM {dom.name()} is transient, so --config cannot apply", hint="drop --config")
    if not live and not config:
        raise InvalidInput("neither --live nor --config applies", hint="give --live and/or --config")
    return (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0) | (libvirt.VIR_DOMAIN_AFFECT_CONFIG if config else 0)


def _cpumap(cpus: list[int], ncpus: int, what: str) -> tuple[bool, ...]:
    bad = [c for c in cpus if c >= ncpus]
    if bad:
        raise InvalidInput(f"{what}: host CPU {bad[0]} does not exist (this host has CPUs 0-{ncpus - 1})",
                           hint="kvmkit host info lists the CPUs of each NUMA node")
    return tuple(i in cpus for i in range(ncpus))


def _vcpu_count(dom, flags: int) -> int:
    with libvirt_errors(f"reading vCPUs of {dom.name()}"):
        if flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
            return int(dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM))
        return int(dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM))


def pin(conn, name: str, *, vcpus: dict[int, str] | None = None, emulator: str | None = None,
        live: bool | None = None, config: bool | None = None) -> dict[str, Any]:
    """Pin vCPUs (``{vcpu: "0-1,3"}``) and/or the emulator threads. All or nothing: on a failure the
    earlier pins of this call are put back."""
    dom = _lookup(conn, name)
    if not vcpus and emulator is None:
        raise InvalidInput("nothing to pin", hint="give --vcpu V --cpus LIST, --emulator LIST or --auto")
    flags = _flags(dom, live, config)
    ncpus = conn.getInfo()[2]
    nvcpu = _vcpu_count(dom, flags)
    plan: list[tuple[str, int | None, tuple[bool, ...]]] = []
    for v, cpus in sorted((vcpus or {}).items()):
        if not 0 <= v < nvcpu:
            raise InvalidInput(f"VM {name} has no vCPU {v} (it has 0-{nvcpu - 1})", hint="vCPUs count from 0")
        plan.append(("vcpu", v, _cpumap(parse_cpulist(cpus), ncpus, f"--vcpu {v} --cpus {cpus}")))
    if emulator is not None:
        plan.append(("emulator", None, _cpumap(parse_cpulist(emulator), ncpus, f"--emulator {emulator}")))
    undo: list[tuple[str, int | None, tuple[bool, ...], int]] = []
    try:
        for kind, vnum, cpumap in plan:
            for f in (libvirt.VIR_DOMAIN_AFFECT_LIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG):
                if flags & f:
                    undo.append((kind, vnum, _current_map(dom, kind, vnum, f), f))
                    with libvirt_errors(f"pinning {kind} {'' if vnum is None else vnum} of {name}"):
                        if kind == "vcpu":
                            dom.pinVcpuFlags(vnum, cpumap, f)
                        else:
                            dom.pinEmulator(cpumap, f)
    except Exception:
        for kind, vnum, old, f in reversed(undo):
            try:
                dom.pinVcpuFlags(vnum, old, f) if kind == "vcpu" else dom.pinEmulator(old, f)
            except libvirt.libvirtError:
                pass
        raise
    return {"name": name, "live": bool(flags & libvirt.VIR_DOMAIN_AFFECT_LIVE),
            "config": bool(flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG), **pin_info(dom, flags)}


def _current_map(dom, kind: str, vcpu: int | None, flag: int) -> tuple[bool, ...]:
    with libvirt_errors(f"reading the pinning of {dom.name()}"):
        if kind == "vcpu":
            return tuple(dom.vcpuPinInfo(flag)[vcpu])
        return tuple(dom.emulatorPinInfo(flag))


def _mapstr(cpumap) -> str:
    return format_cpulist([i for i, on in enumerate(cpumap) if on])


def pin_info(dom, flags: int | None = None) -> dict[str, Any]:
    """vCPU -> host CPU list and emulator CPU list (live when running, else the saved definition)."""
    if flags is None or flags & libvirt.VIR_DOMAIN_AFFECT_LIVE:
        flag = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else libvirt.VIR_DOMAIN_AFFECT_CONFIG
    else:
        flag = libvirt.VIR_DOMAIN_AFFECT_CONFIG
    with libvirt_errors(f"reading the pinning of {dom.name()}"):
        vcpus = {str(i): _mapstr(m) for i, m in enumerate(dom.vcpuPinInfo(flag))}
        emulator = _mapstr(dom.emulatorPinInfo(flag))
    return {"vcpupin": vcpus, "emulatorpin": emulator}


def auto_pin(conn, name: str, *, live: bool | None = None, config: bool | None = None) -> dict[str, Any]:
    """Pin every vCPU into the NUMA node with the most free memory, spreading over its least used CPUs
    (counting other running VMs' pins), and the emulator to that node's CPUs; with config, also bind the
    VM's memory to that node (numatune strict) from its next start."""
    dom = _lookup(conn, name)
    flags = _flags(dom, live, config)
    topo = host_topology(conn)
    node = max(topo.nodes, key=lambda n: (n.free_mib or 0, len(n.cpus)))
    if not node.cpus:
        raise InvalidState(f"NUMA node {node.id} has no CPUs to pin to", hint="pin by hand with --vcpu/--cpus")
    load = {c: 0 for c in node.cpus}
    for other in placements(conn):
        if other["name"] == name:
            continue
        for cpus in other["vcpu_affinity"].values():
            listed = parse_cpulist(cpus) if cpus else []
            if len(listed) < len(node.cpus):  # only exclusive-ish pins count as load
                for c in listed:
                    if c in load:
                        load[c] += 1
    order = sorted(node.cpus, key=lambda c: (load[c], c))
    nvcpu = _vcpu_count(dom, flags)
    chosen = {v: str(order[v % len(order)]) for v in range(nvcpu)}
    result = pin(conn, name, vcpus=chosen, emulator=format_cpulist(node.cpus),
                 live=bool(flags & libvirt.VIR_DOMAIN_AFFECT_LIVE),
                 config=bool(flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG))
    result["node"] = node.id
    result["node_free_mib"] = node.free_mib
    if flags & libvirt.VIR_DOMAIN_AFFECT_CONFIG:
        # keep the memory in that node too: <numatune><memory mode="strict" nodeset="N"/> (from the next start;
        # libvirt cannot move a running VM's memory into a strict policy)
        try:
            dom.setNumaParameters({libvirt.VIR_DOMAIN_NUMA_MODE: libvirt.VIR_DOMAIN_NUMATUNE_MEM_STRICT,
                                   libvirt.VIR_DOMAIN_NUMA_NODESET: str(node.id)}, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
            result["numatune"] = {"mode": "strict", "nodeset": str(node.id), "from": "next start"}
        except libvirt.libvirtError as err:
            result["warning"] = f"vCPUs pinned, but memory placement was not saved: {err.get_error_message()}"
    return result


def placement(conn, dom, topo=None) -> dict[str, Any]:
    """Where a running VM runs: each vCPU's current host CPU and affinity, emulator affinity, nodes used."""
    topo = topo or host_topology(conn)
    with libvirt_errors(f"reading the placement of {dom.name()}"):
        info, maps = dom.vcpus()
        emulator = dom.emulatorPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    affinity = {str(v[0]): _mapstr(maps[i]) for i, v in enumerate(info)}
    running_on = {str(v[0]): v[3] for v in info}
    used = {c for m in maps for c, on in enumerate(m) if on}
    nodes = sorted({n for c in used if (n := topo.node_of_cpu(c)) is not None})
    return {"name": dom.name(), "vcpus": len(info), "vcpu_cpu": running_on, "vcpu_affinity": affinity,
            "emulator_affinity": _mapstr(emulator), "nodes": nodes}


def placements(conn) -> list[dict[str, Any]]:
    """:func:`placement` for every running VM."""
    topo = host_topology(conn)
    out = []
    with libvirt_errors("listing running VMs"):
        doms = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    for dom in doms:
        try:
            out.append(placement(conn, dom, topo))
        except Exception:  # a VM that stopped meanwhile
            continue
    return out
