"""Placement: which host a new VM goes to when none was named, and why (``vm create --explain``,
``POST /api/v1/placement``). Used only when the inventory holds more than the local host.

A host is refused when it is down, in maintenance, has not the memory (its free memory -- capped, when the
inventory gives it a ``max_memory``, at the cap less what its running VMs were given), or would exceed its
vCPU overcommit limit: the running VMs' vCPUs plus the new ones per physical core. The seeds advise not to
give the VMs of a host more vCPUs together than it has physical cores ("一般所有虚拟CPU数量加在一起不要大于
物理CPU核心数"; VMware's practice: "最好不要超配置"), so the default limit is 1.0 (KVMKIT_CPU_OVERCOMMIT sets
another default; ``kvmkit host set NAME --cpu-overcommit R`` one host's). Of the hosts left, one where the VM
fits in a single NUMA node is preferred (a VM should not span nodes: host/plan.py), then the one with the
most memory left after it, then the lowest vCPU ratio, then the name.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kvmkit.errors import InvalidInput, InvalidState

if TYPE_CHECKING:
    from kvmkit.hosts.registry import Hosts

DEFAULT_CPU_OVERCOMMIT = 1.0
FACTS_TIMEOUT_S = 5.0


def default_overcommit() -> float:
    value = os.environ.get("KVMKIT_CPU_OVERCOMMIT")
    if not value:
        return DEFAULT_CPU_OVERCOMMIT
    try:
        ratio = float(value)
    except ValueError as err:
        raise InvalidInput(f"KVMKIT_CPU_OVERCOMMIT={value!r} is not a number", hint="e.g. 1 or 4") from err
    if ratio <= 0:
        raise InvalidInput(f"KVMKIT_CPU_OVERCOMMIT={value!r} must be > 0", hint="e.g. 1 or 4")
    return ratio


@dataclass
class Candidate:
    """One host's verdict for the new VM."""

    name: str
    ok: bool
    reason: str
    state: str = "up"
    free_memory_mib: int | None = None
    available_mib: int | None = None  # what the new VM may use here
    memory_after_mib: int | None = None
    cores: int | None = None
    vcpus_after: int | None = None
    vcpu_limit: float | None = None
    cpu_overcommit: float | None = None
    numa_node: int | None = None  # the node the VM fits in whole (None: it would span nodes)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge(name: str, facts: dict[str, Any] | None, *, vcpus: int, memory_mib: int, maintenance: bool = False,
          max_memory_mib: int | None = None, cpu_overcommit: float | None = None,
          nodes: list[dict[str, Any]] | None = None, error: str | None = None) -> Candidate:
    """The verdict for one host from its facts (service.hosts.facts.host_facts) and inventory limits."""
    if facts is None:
        return Candidate(name, False, f"down: {error or 'no answer'}", state="down")
    if maintenance:
        return Candidate(name, False, "in maintenance (kvmkit host maintenance NAME off)", state="maintenance")
    ratio = cpu_overcommit or default_overcommit()
    free = int(facts["free_memory_mib"])
    available = free
    notes = []
    if max_memory_mib:
        left_by_cap = max_memory_mib - int(facts["memory_running_mib"])
        if left_by_cap < available:
            available = max(0, left_by_cap)
            notes.append(f"capped at {max_memory_mib} MiB, running VMs have {facts['memory_running_mib']} MiB")
    cores = int(facts["cores"])
    limit = ratio * cores
    vcpus_after = int(facts["vcpus_running"]) + vcpus
    cand = Candidate(name, True, "", free_memory_mib=free, available_mib=available,
                     memory_after_mib=available - memory_mib, cores=cores, vcpus_after=vcpus_after,
                     vcpu_limit=limit, cpu_overcommit=ratio, notes=notes)
    if memory_mib > available:
        cand.ok = False
        cand.reason = f"not enough memory: the VM needs {memory_mib} MiB, {available} MiB free"
        if notes:
            cand.reason += f" ({notes[0]})"
        return cand
    if vcpus_after > limit:
        cand.ok = False
        cand.reason = (f"vCPU overcommit: {vcpus_after} vCPUs on {cores} physical cores would be "
                       f"{vcpus_after / cores:.2f} per core, over the limit {ratio:g}")
        return cand
    for node in nodes or []:
        if (node.get("free_mib") or 0) >= memory_mib and len(node.get("cpus") or []) >= vcpus:
            cand.numa_node = int(node["id"])
            break
    if nodes and cand.numa_node is None:
        cand.notes.append("no single NUMA node has room for it: it would span nodes")
    cand.reason = (f"{cand.memory_after_mib} MiB left after it, {vcpus_after}/{limit:g} vCPUs"
                   + (f", fits NUMA node {cand.numa_node}" if cand.numa_node is not None else ""))
    return cand


def choose(candidates: list[Candidate]) -> Candidate | None:
    fit = [c for c in candidates if c.ok]
    if not fit:
        return None
    return min(fit, key=lambda c: (c.numa_node is None, -(c.memory_after_mib or 0),
                                   (c.vcpus_after or 0) / (c.vcpu_limit or 1), c.name))


def decide(candidates: list[Candidate], *, vcpus: int, memory_mib: int) -> dict[str, Any]:
    best = choose(candidates)
    out: dict[str, Any] = {"vcpus": vcpus, "memory_mib": memory_mib, "chosen": best.name if best else None,
                           "reason": None, "candidates": [c.to_dict() for c in candidates]}
    if best is not None:
        others = [c for c in candidates if c.ok and c is not best]
        why = best.reason
        if others:
            why += "; the most room of " + ", ".join(sorted(c.name for c in [best, *others]))
        out["reason"] = f"host {best.name}: {why}"
    return out


def place(hosts: Hosts, *, vcpus: int, memory_mib: int, timeout: float = FACTS_TIMEOUT_S) -> dict[str, Any]:
    """Ask every host of the inventory (at once) and decide; the answer of :func:`decide`."""
    from kvmkit.service.hosts.listing import ask_hosts

    if vcpus < 1 or memory_mib < 1:
        raise InvalidInput("placement needs the VM's vCPUs and memory", hint="e.g. vcpus=1, memory=512M")
    pairs = hosts.handles()

    def facts_of(handle: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from kvmkit.host.topology import host_topology
        from kvmkit.service.hosts.facts import host_facts

        conn = handle.get()
        facts = host_facts(conn)
        try:
            nodes = [n.to_dict() for n in host_topology(conn).nodes]
        except Exception:
            nodes = []
        return facts, nodes

    answers = ask_hosts([(rec.name, functools.partial(facts_of, h)) for rec, h in pairs], timeout)
    candidates = []
    for (rec, _h), (answer, got) in zip(pairs, answers, strict=True):
        facts, nodes = got if got is not None else (None, None)
        candidates.append(judge(rec.name, facts, vcpus=vcpus, memory_mib=memory_mib, maintenance=rec.maintenance,
                                max_memory_mib=rec.max_memory_mib, cpu_overcommit=rec.cpu_overcommit,
                                nodes=nodes, error=answer.error))
    return decide(candidates, vcpus=vcpus, memory_mib=memory_mib)


def require_host(decision: dict[str, Any], vm: str) -> str:
    """The chosen host's name, or InvalidState listing why every host was refused."""
    if decision["chosen"]:
        return str(decision["chosen"])
    why = "; ".join(f"{c['name']}: {c['reason']}" for c in decision["candidates"])
    raise InvalidState(f"no host can take VM '{vm}' ({decision['vcpus']} vCPUs, {decision['memory_mib']} MiB): {why}",
                       hint="free memory or vCPUs, raise a limit (kvmkit host set NAME --cpu-overcommit R / "
                            "--max-memory SIZE), end a maintenance, or name a host with --host")
