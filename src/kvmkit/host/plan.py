"""NUMA-aware placement advice: which node (and which host CPUs) each VM should live on.

Each VM is given as ``[NAME=]<vcpus>c:<memory>[:<sockets>x<cores>[x<threads>]]`` (e.g. ``mail1=4c:32G``).
VMs are placed largest first on the node with the most free memory that also has enough unassigned CPUs
(best fit: keep a VM inside one node); a VM that fits in no single node is spread over several and warned
about. Warnings follow the seeds: total vCPUs above ``overcommit`` x physical cores, guest topologies like
2x3 whose sockets do not line up with the host's, and VMs larger than a node. For each VM the plan gives the
``<numatune>`` and ``<cputune>`` (vcpupin + emulatorpin) XML it would apply.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.host.topology import Topology, format_cpulist

_VM = re.compile(r"^(?:(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,63})=)?(?P<vcpus>\d+)c:(?P<mem>[0-9.]+[A-Za-z]*)"
                 r"(?::(?P<topo>\d+x\d+(?:x\d+)?))?$")


@dataclass
class VMRequest:
    name: str
    vcpus: int
    memory_mib: int
    sockets: int = 1
    cores: int = 0
    threads: int = 1


@dataclass
class Placement:
    vm: VMRequest
    nodes: list[int] = field(default_factory=list)
    cpus: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def parse_vm(text: str, index: int = 0) -> VMRequest:
    """``'mail1=4c:32G'`` / ``'4c:32G:2x2'`` -> VMRequest; InvalidInput showing the expected form."""
    from kvmkit.spec.common import parse_size_mib

    match = _VM.match(text.strip())
    if not match:
        raise InvalidInput(f"bad --vm {text!r}", hint="use [NAME=]VCPUSc:MEMORY[:SOCKETSxCORES], e.g. mail1=4c:32G")
    vcpus = int(match["vcpus"])
    if vcpus < 1:
        raise InvalidInput(f"--vm {text!r}: a VM needs at least 1 vCPU")
    mem = parse_size_mib(match["mem"])
    req = VMRequest(match["name"] or f"vm{index + 1}", vcpus, mem, 1, vcpus, 1)
    if match["topo"]:
        parts = [int(p) for p in match["topo"].split("x")]
        req.sockets, req.cores = parts[0], parts[1]
        req.threads = parts[2] if len(parts) > 2 else 1
        if req.sockets * req.cores * req.threads != vcpus:
            raise InvalidInput(f"--vm {text!r}: topology {match['topo']} gives "
                               f"{req.sockets * req.cores * req.threads} vCPUs, not {vcpus}",
                               hint="sockets x cores x threads must equal the vCPU count")
    return req


def _topology_warnings(req: VMRequest, topo: Topology) -> list[str]:
    warns = []
    if req.sockets > 1 and (req.cores & (req.cores - 1) or topo.cores_per_socket % req.cores):
        warns.append(f"{req.name}: guest topology {req.sockets}x{req.cores} does not line up with the host's "
                     f"{topo.cores_per_socket} cores per socket, so its vCPUs cross host sockets; "
                     "use 1x1, 1x2, 1x4, 2x2, 2x4 ... instead")
    return warns


def make_plan(topo: Topology, vms: list[VMRequest], *, overcommit: float = 1.0) -> dict[str, Any]:
    """Place ``vms`` on ``topo``'s nodes; returns placements, warnings and the XML per VM."""
    if overcommit <= 0:
        raise InvalidInput(f"--overcommit {overcommit} must be > 0", hint="1.0 = no more vCPUs than physical cores")
    names = [v.name for v in vms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInput(f"duplicate VM names in the plan: {', '.join(dupes)}", hint="name them NAME=4c:32G")
    free_mem = {n.id: n.memory_mib for n in topo.nodes}
    free_cpus = {n.id: list(n.cpus) for n in topo.nodes}
    node_by_id = {n.id: n for n in topo.nodes}
    warnings: list[str] = []
    total_vcpus = sum(v.vcpus for v in vms)
    if total_vcpus > topo.cores * overcommit:
        warnings.append(f"vCPU overcommit: {total_vcpus} vCPUs on {topo.cores} physical cores "
                        f"(ratio {total_vcpus / topo.cores:.2f} > {overcommit:g})")
    placements: dict[str, Placement] = {}
    for req in sorted(vms, key=lambda v: (v.memory_mib, v.vcpus), reverse=True):
        pl = Placement(req, warnings=_topology_warnings(req, topo))
        fits = [n.id for n in topo.nodes if free_mem[n.id] >= req.memory_mib and len(free_cpus[n.id]) >= req.vcpus]
        largest = max(topo.nodes, key=lambda n: (n.memory_mib, len(n.cpus)))
        if fits:
            best = min(fits, key=lambda i: (free_mem[i] - req.memory_mib, -len(free_cpus[i]), i))
            pl.nodes = [best]
            pl.cpus, free_cpus[best] = free_cpus[best][:req.vcpus], free_cpus[best][req.vcpus:]
            free_mem[best] -= req.memory_mib
        else:
            if req.memory_mib > largest.memory_mib or req.vcpus > len(largest.cpus):
                pl.warnings.append(f"{req.name}: larger than a NUMA node ({req.vcpus} vCPUs, {req.memory_mib} MiB "
                                   f"vs. {len(largest.cpus)} CPUs, {largest.memory_mib} MiB per node); it spans "
                                   "nodes and crosses sockets: make it smaller or give it a vNUMA topology")
            else:
                pl.warnings.append(f"{req.name}: no single node has {req.vcpus} free CPUs and {req.memory_mib} MiB "
                                   "left; it spans nodes")
            mem_left, order = req.memory_mib, sorted(topo.nodes, key=lambda n: -free_mem[n.id])
            for node in order:  # memory from the emptiest nodes, CPUs alongside
                if mem_left <= 0 and len(pl.cpus) >= req.vcpus:
                    break
                take = min(free_mem[node.id], mem_left)
                cpus = free_cpus[node.id][:req.vcpus - len(pl.cpus)]
                if take > 0 or cpus:
                    pl.nodes.append(node.id)
                    free_mem[node.id] -= take
                    mem_left -= take
                    pl.cpus += cpus
                    free_cpus[node.id] = free_cpus[node.id][len(cpus):]
            if mem_left > 0:
                pl.warnings.append(f"{req.name}: {mem_left} MiB more memory than the host has left")
            if len(pl.cpus) < req.vcpus:  # overcommitted: share the node CPUs
                share = [c for nid in (pl.nodes or [largest.id]) for c in node_by_id[nid].cpus]
                pl.cpus += [share[i % len(share)] for i in range(req.vcpus - len(pl.cpus))]
            sockets = {s for nid in pl.nodes for s in node_by_id[nid].sockets}
            if len(sockets) > 1:
                pl.warnings.append(f"{req.name}: placed across sockets {sorted(sockets)}")
        placements[req.name] = pl
    rows = []
    for req in vms:
        pl = placements[req.name]
        warnings += pl.warnings
        rows.append({"name": req.name, "vcpus": req.vcpus, "memory_mib": req.memory_mib,
                     "topology": f"{req.sockets}x{req.cores}x{req.threads}", "nodes": pl.nodes,
                     "cpus": format_cpulist(pl.cpus), "vcpupin": {i: c for i, c in enumerate(pl.cpus)},
                     "fits_one_node": len(pl.nodes) == 1, "xml": placement_xml(pl.nodes, pl.cpus)})
    return {"topology": topo.to_dict(), "overcommit": overcommit, "total_vcpus": total_vcpus,
            "vms": rows, "warnings": warnings,
            "nodes_left": [{"id": n.id, "free_memory_mib": free_mem[n.id], "free_cpus": format_cpulist(free_cpus[n.id])}
                           for n in topo.nodes],
            "fits": all(r["fits_one_node"] for r in rows) and not warnings}


def placement_xml(nodes: list[int], cpus: list[int]) -> str:
    """The ``<numatune>`` and ``<cputune>`` elements for one placement (lxml, pretty-printed)."""
    numatune = etree.Element("numatune")
    etree.SubElement(numatune, "memory", mode="strict", nodeset=format_cpulist(nodes))
    cputune = etree.Element("cputune")
    for vcpu, cpu in enumerate(cpus):
        etree.SubElement(cputune, "vcpupin", vcpu=str(vcpu), cpuset=str(cpu))
    etree.SubElement(cputune, "emulatorpin", cpuset=format_cpulist(cpus))
    return "".join(etree.tostring(el, encoding="unicode", pretty_print=True) for el in (numatune, cputune))
