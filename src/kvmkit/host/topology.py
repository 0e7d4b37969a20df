"""The host's CPU and NUMA topology: sockets, cores, threads, nodes (CPUs + memory), caches.

Read from /sys/devices/system/{cpu,node} with free memory per node from libvirt (getCellsFreeMemory)
when a connection is given, or loaded from a JSON file (``kvmkit host plan --topology``) so a big host
can be planned from a laptop. File format (nodes are optional: one per socket, memory split evenly)::

    {"sockets": 2, "cores_per_socket": 8, "threads_per_core": 1, "memory": "128G",
     "nodes": [{"id": 0, "socket": 0, "cpus": "0-7", "memory": "64G"}, ...]}
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kvmkit.errors import InvalidInput
from kvmkit.host import sysfs


def parse_cpulist(text: str) -> list[int]:
    """``'0-3,8,10-11'`` -> ``[0, 1, 2, 3, 8, 10, 11]``; InvalidInput naming the bad part."""
    cpus: set[int] = set()
    for part in "".join(str(text).split()).split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not match:
            raise InvalidInput(f"bad CPU list {text!r} (at {part!r})", hint="use a list like 0-3,6,8")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) else lo
        if hi < lo:
            raise InvalidInput(f"bad CPU range {part!r} in {text!r}", hint="write ranges low-high, e.g. 2-5")
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise InvalidInput(f"empty CPU list {text!r}", hint="use a list like 0-3,6,8")
    return sorted(cpus)


def format_cpulist(cpus: list[int] | set[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``'0-2,5'``."""
    items = sorted(set(cpus))
    parts: list[str] = []
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        parts.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(parts)


@dataclass
class Node:
    id: int
    cpus: list[int]
    memory_mib: int
    free_mib: int | None = None
    sockets: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cpulist"] = format_cpulist(self.cpus)
        return d


@dataclass
class Topology:
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    memory_mib: int
    nodes: list[Node]
    cpu_socket: dict[int, int] = field(default_factory=dict)  # host cpu -> socket
    source: str = "host"

    @property
    def cpus(self) -> int:
        return sum(len(n.cpus) for n in self.nodes)

    @property
    def cores(self) -> int:
        return self.sockets * self.cores_per_socket

    def node_of_cpu(self, cpu: int) -> int | None:
        for node in self.nodes:
            if cpu in node.cpus:
                return node.id
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "sockets": self.sockets, "cores_per_socket": self.cores_per_socket,
                "threads_per_core": self.threads_per_core, "cpus": self.cpus, "cores": self.cores,
                "memory_mib": self.memory_mib, "nodes": [n.to_dict() for n in self.nodes]}


def _online_cpus() -> list[int]:
    online = sysfs.CPU_DIR / "online"
    if sysfs.exists(online):
        return parse_cpulist(sysfs.read(online))
    return sorted(int(n[3:]) for n in sysfs.listdir(sysfs.CPU_DIR) if re.fullmatch(r"cpu\d+", n))


def _cpu_ids(cpu: int) -> tuple[int, int]:
    """(socket, core) of a host CPU."""
    topo = sysfs.CPU_DIR / f"cpu{cpu}" / "topology"
    socket = sysfs.read_int(topo / "physical_package_id") if sysfs.exists(topo / "physical_package_id") else 0
    core = sysfs.read_int(topo / "core_id") if sysfs.exists(topo / "core_id") else cpu
    return max(socket, 0), core


def is_local(conn) -> bool:
    """True when ``conn`` talks to the hypervisor on this machine (so sysfs describes its host)."""
    from urllib.parse import urlparse

    uri = urlparse(conn.getURI())
    return not uri.hostname and not uri.scheme.startswith("test")


def topology_from_capabilities(conn) -> Topology:
    """The topology libvirt reports (``<host><topology>`` of getCapabilities) for remote or test hosts."""
    from lxml import etree

    from kvmkit.hypervisor.errors import libvirt_errors

    with libvirt_errors("reading host capabilities"):
        root = etree.fromstring(conn.getCapabilities().encode())
        cells = root.findall("host/topology/cells/cell")
        free = conn.getCellsFreeMemory(0, len(cells)) if cells else []
    nodes: list[Node] = []
    cpu_socket: dict[int, int] = {}
    cores: set[tuple[int, int]] = set()
    for cell in cells:
        nid = int(cell.get("id"))
        mem = cell.find("memory")
        node_cpus = []
        for cpu in cell.findall("cpus/cpu"):
            cid, sock = int(cpu.get("id")), int(cpu.get("socket_id", "0"))
            node_cpus.append(cid)
            cpu_socket[cid] = sock
            cores.add((sock, int(cpu.get("core_id", cid))))
        nodes.append(Node(nid, sorted(node_cpus), int(mem.text) // 1024 if mem is not None else 0,
                          int(free[nid]) // 2**20 if nid < len(free) else None,
                          sorted({cpu_socket[c] for c in node_cpus})))
    sockets = len(set(cpu_socket.values())) or 1
    ncpus = len(cpu_socket)
    return Topology(sockets, max(1, len(cores) // sockets), max(1, ncpus // max(1, len(cores))),
                    sum(n.memory_mib for n in nodes), nodes, cpu_socket, f"libvirt:{conn.getURI()}")


def host_topology(conn=None) -> Topology:
    """This host's topology from sysfs; free memory per node from libvirt when ``conn`` is given.
    For a remote (or test) connection, the topology libvirt reports for that host."""
    if conn is not None and not is_local(conn):
        return topology_from_capabilities(conn)
    cpus = _online_cpus()
    ids = {cpu: _cpu_ids(cpu) for cpu in cpus}
    sockets = sorted({s for s, _ in ids.values()})
    cores = {(s, c) for s, c in ids.values()}
    cores_per_socket = max(1, len(cores) // max(1, len(sockets)))
    threads = max(1, len(cpus) // max(1, len(cores)))
    node_ids = sorted(int(n[4:]) for n in sysfs.listdir(sysfs.NODE_DIR) if re.fullmatch(r"node\d+", n))
    nodes: list[Node] = []
    for nid in node_ids:
        path = sysfs.NODE_DIR / f"node{nid}"
        text = sysfs.read(path / "cpulist")
        node_cpus = parse_cpulist(text) if text else []
        info = sysfs.node_meminfo(nid)
        nodes.append(Node(nid, node_cpus, info.get("MemTotal", 0) // 1024, info.get("MemFree", 0) // 1024,
                          sorted({ids[c][0] for c in node_cpus if c in ids})))
    if not nodes:  # kernels without NUMA support: one node with everything
        mem = sysfs.meminfo()
        nodes = [Node(0, cpus, mem.get("MemTotal", 0) // 1024, mem.get("MemFree", 0) // 1024, sockets)]
    if conn is not None:
        from kvmkit.hypervisor.errors import libvirt_errors

        with libvirt_errors("reading free memory per NUMA node"):
            free = conn.getCellsFreeMemory(0, max(n.id for n in nodes) + 1)
        for node in nodes:
            if node.id < len(free):
                node.free_mib = int(free[node.id]) // (1024 * 1024)
    total = sysfs.meminfo().get("MemTotal", 0) // 1024
    return Topology(len(sockets) or 1, cores_per_socket, threads, total, nodes,
                    {c: ids[c][0] for c in cpus}, "host")


def _size_mib(value: Any, where: str) -> int:
    from kvmkit.spec.common import parse_size_mib

    try:
        return parse_size_mib(value)
    except InvalidInput as err:
        raise InvalidInput(f"{where}: {err.message}", hint=err.hint) from err


def load_topology(path: str | Path) -> Topology:
    """A topology from a JSON file (see the module docstring); InvalidInput naming the bad field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InvalidInput(f"topology file {path} does not exist") from err
    except (OSError, ValueError) as err:
        raise InvalidInput(f"cannot read topology file {path}: {err}", hint="it must be a JSON object") from err
    return topology_from_dict(data, source=str(path))


def topology_from_dict(data: dict[str, Any], source: str = "file") -> Topology:
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: topology must be a JSON object")
    try:
        sockets = int(data.get("sockets", 1))
        cores = int(data["cores_per_socket"])
        threads = int(data.get("threads_per_core", 1))
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidInput(f"{source}: needs integer sockets, cores_per_socket, threads_per_core ({err})",
                           hint='e.g. {"sockets": 2, "cores_per_socket": 8, "memory": "128G"}') from err
    if min(sockets, cores, threads) < 1:
        raise InvalidInput(f"{source}: sockets, cores_per_socket and threads_per_core must be >= 1")
    per_socket = cores * threads
    nodes: list[Node] = []
    if data.get("nodes"):
        for i, nd in enumerate(data["nodes"]):
            where = f"{source}: nodes[{i}]"
            if "cpus" not in nd or "memory" not in nd:
                raise InvalidInput(f"{where} needs cpus and memory", hint='e.g. {"cpus": "0-7", "memory": "64G"}')
            node_cpus = parse_cpulist(str(nd["cpus"]))
            socket = int(nd.get("socket", node_cpus[0] // per_socket))
            mem = _size_mib(nd["memory"], f"{where}.memory")
            free = _size_mib(nd["free"], f"{where}.free") if "free" in nd else mem
            nodes.append(Node(int(nd.get("id", i)), node_cpus, mem, free, [socket]))
        memory = sum(n.memory_mib for n in nodes)
    else:
        if "memory" not in data:
            raise InvalidInput(f"{source}: needs memory (e.g. \"128G\") or a nodes list")
        memory = _size_mib(data["memory"], f"{source}: memory")
        for s in range(sockets):
            mem = memory // sockets
            nodes.append(Node(s, list(range(s * per_socket, (s + 1) * per_socket)), mem, mem, [s]))
    cpu_socket = {c: n.sockets[0] for n in nodes for c in n.cpus}
    return Topology(sockets, cores, threads, memory, nodes, cpu_socket, source)


def caches() -> list[dict[str, Any]]:
    """Distinct CPU caches: level, type, size and which CPUs share each."""
    seen: dict[tuple[str, str, str], dict[str, Any]] = {}
    for cpu in _online_cpus():
        base = sysfs.CPU_DIR / f"cpu{cpu}" / "cache"
        for idx in sysfs.listdir(base):
            if not idx.startswith("index"):
                continue
            d = base / idx
            try:
                level, kind, size = (sysfs.read(d / "level"), sysfs.read(d / "type"), sysfs.read(d / "size"))
                shared = sysfs.read(d / "shared_cpu_list")
            except Exception:
                continue
            seen.setdefault((level, kind, shared), {"level": int(level), "type": kind, "size": size,
                                                    "shared_cpus": shared})
    return sorted(seen.values(), key=lambda c: (c["level"], c["type"], c["shared_cpus"]))


def thp_mode() -> dict[str, Any]:
    """Transparent huge pages: the selected mode and defrag setting."""
    out: dict[str, Any] = {}
    for key in ("enabled", "defrag"):
        path = sysfs.THP_DIR / key
        if sysfs.exists(path):
            out[key], out[f"{key}_options"] = sysfs.read_choice(path)
    return out


def host_info(conn=None) -> dict[str, Any]:
    """Everything ``kvmkit host info`` shows except VM placement: CPUs, NUMA, caches, memory, KSM, huge pages,
    THP and IO schedulers."""
    from kvmkit.host import hugepages, iosched, ksm

    topo = host_topology(conn)
    if conn is not None and not is_local(conn):
        return {**topo.to_dict(), "caches": [], "memory": {"total_mib": topo.memory_mib, "free_mib": None,
                                                           "available_mib": None},
                "ksm": {"available": False}, "hugepages": [], "hugetlbfs_mounts": [], "thp": {},
                "io_schedulers": [], "note": "KSM, huge pages, THP and IO schedulers are read from sysfs, "
                "so they are shown for the local host only"}
    mem = sysfs.meminfo()
    return {**topo.to_dict(), "caches": caches(),
            "memory": {"total_mib": mem.get("MemTotal", 0) // 1024, "free_mib": mem.get("MemFree", 0) // 1024,
                       "available_mib": mem.get("MemAvailable", 0) // 1024},
            "ksm": ksm.status(), "hugepages": hugepages.pools(),
            "hugepages_default_size_kib": hugepages.default_size_kib(),
            "hugetlbfs_mounts": sysfs.mounts_of_type("hugetlbfs"), "thp": thp_mode(),
            "io_schedulers": iosched.list_all()}
