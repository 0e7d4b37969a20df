"""Typed bodies and answers of /api/v1/host (see routes/host.py): what kvmkit.host's functions return."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from kvmkit.api.models.base import Out

MAX_CPU = 8191  # Linux's largest NR_CPUS: no CPU list names more (and none may expand to millions)
_CPULIST = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")


def bounded_cpulist(value: str, what: str) -> str:
    """A CPU list like 0-3,8 whose numbers stay within MAX_CPU (checked before anything expands it)."""
    text = "".join(value.split())
    if not _CPULIST.match(text):
        raise ValueError(f"{what} {value!r} is not a CPU list like 0-3,6,8")
    if any(int(n) > MAX_CPU for n in re.findall(r"\d+", text)):
        raise ValueError(f"{what} {value!r} names a CPU above {MAX_CPU}")
    return text


class Change(Out):
    path: str
    before: str
    after: str


class Check(Out):
    name: str
    status: Literal["pass", "warn", "fail"]
    detail: str
    hint: str | None = None


class HostCheck(Out):
    uri: str
    ready: bool = Field(description="nothing failed (`kvmkit host check` exits 1 otherwise)")
    virt_type: str
    virt_type_reason: str
    checks: list[Check]
    user: str


class Node(Out):
    id: int
    cpus: list[int]
    cpulist: str
    memory_mib: int
    free_mib: int | None = None
    sockets: list[int]


class Topology(Out):
    source: str
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    cpus: int
    cores: int
    memory_mib: int
    nodes: list[Node]


class Cache(Out):
    level: int
    type: str
    size: str
    shared_cpus: str


class Memory(Out):
    total_mib: int
    free_mib: int | None = None
    available_mib: int | None = None


class Ksm(Out):
    available: bool
    run: int | None = Field(None, description="0 stopped (merged pages kept), 1 scanning and merging, 2 stopped "
                                              "and unmerged")
    run_meaning: str | None = None
    sleep_millisecs: int | None = None
    pages_to_scan: int | None = None
    merge_across_nodes: int | None = None
    max_page_sharing: int | None = None
    use_zero_pages: int | None = None
    pages_shared: int | None = None
    pages_sharing: int | None = None
    pages_unshared: int | None = None
    pages_volatile: int | None = None
    full_scans: int | None = None
    general_profit: int | None = None
    ksm_zero_pages: int | None = None
    page_size: int | None = None
    saved_bytes: int | None = Field(None, description="pages_sharing x page size")
    changed: list[Change] = Field(default_factory=list)


class KsmChange(BaseModel):
    action: Literal["enable", "disable", "unmerge"] | None = Field(
        None, description="enable: run=1; disable: run=0 (merged pages kept); unmerge: run=2 (split them all)")
    sleep_ms: int | None = Field(None, ge=0, le=10_000_000, description="sleep_millisecs between scans")
    pages_to_scan: int | None = Field(None, ge=1, le=100_000_000, description="pages scanned per wake-up")


class HugePool(Out):
    size_kib: int
    size: str
    total: int
    free: int
    reserved: int
    surplus: int
    available: int = Field(description="free - reserved")
    total_bytes: int


class HugePages(Out):
    pools: list[HugePool]
    default_size_kib: int


class HugePagesChange(BaseModel):
    count: int = Field(ge=0, le=1 << 30, description="number of huge pages to have")
    size: Literal["2M", "1G"] = Field("2M", description="2M: allocated now; 1G: the answer gives the kernel "
                                                        "command line (reserved at boot)")


class HugePagesAllocated(Out):
    size: str
    requested: int
    allocated: int | None = None
    runtime: bool = Field(description="false: 1 GiB pages, reserved at boot (see kernel_cmdline)")
    before: int | None = None
    free: int | None = None
    complete: bool | None = None
    change: Change | None = None
    warning: str | None = None
    kernel_cmdline: str | None = None
    instructions: str | None = None


class IoScheduler(Out):
    device: str
    scheduler: str | None = None
    available: list[str]
    previous: str | None = Field(None, description="after a change: the scheduler before")


class IoSchedulerChange(BaseModel):
    scheduler: str = Field(min_length=1, max_length=64)


class Thp(Out):
    enabled: str | None = None
    enabled_options: list[str] = Field(default_factory=list)
    defrag: str | None = None
    defrag_options: list[str] = Field(default_factory=list)


class VMPlacement(Out):
    name: str
    vcpus: int
    vcpu_cpu: dict[str, int] = Field(description="vCPU -> the host CPU it last ran on")
    vcpu_affinity: dict[str, str] = Field(description="vCPU -> host CPUs it may run on")
    emulator_affinity: str
    nodes: list[int]


class HostInfo(Topology):
    caches: list[Cache]
    memory: Memory
    ksm: Ksm
    hugepages: list[HugePool]
    hugepages_default_size_kib: int | None = None
    hugetlbfs_mounts: list[str]
    thp: Thp
    io_schedulers: list[IoScheduler]
    note: str | None = Field(None, description="why some parts are empty (a remote or test libvirt)")
    vms: list[VMPlacement] = Field(description="where the running VMs run")


class ProfileItem(Out):
    name: str
    kind: Literal["built-in", "user"]
    summary: str
    applied: bool


class ProfileSetting(Out):
    kind: Literal["sysctl", "sysfs"]
    key: str
    value: str
    path: str
    current: str | None = Field(None, description="this host's value now (null: not on this kernel)")


class Profile(Out):
    name: str
    summary: str
    sources: list[str]
    settings: list[ProfileSetting]
    ignored: list[str]


class ProfileApply(BaseModel):
    persist: bool = Field(False, description="also write /etc/sysctl.d/90-kvmkit-NAME.conf")


class ProfileApplied(Out):
    profile: str
    method: Literal["direct", "tuned"]
    changed: list[Change]
    skipped: list[str]
    ignored: list[str]
    persisted: str | None = None


class Restored(Out):
    path: str
    value: str
    was: str


class ProfileRolledBack(Out):
    profile: str
    method: Literal["direct", "tuned"]
    restored: list[Restored]
    unpersisted: str | None = None


class PlanVM(BaseModel):
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    vcpus: int = Field(ge=1, le=4096)
    memory: str | int = Field(description="e.g. 32G, 512M, 2048 (MiB)")
    sockets: int | None = Field(None, ge=1, le=64)
    cores: int | None = Field(None, ge=1, le=4096)
    threads: int | None = Field(None, ge=1, le=8)


class PlanNode(BaseModel):
    id: int | None = Field(None, ge=0, le=1023)
    socket: int | None = Field(None, ge=0, le=63)
    cpus: str
    memory: str | int
    free: str | int | None = None

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: str) -> str:
        return bounded_cpulist(v, "node cpus")


class PlanTopology(BaseModel):
    """A host to plan for instead of this one (the `--topology` file's format)."""

    sockets: int = Field(1, ge=1, le=64)
    cores_per_socket: int = Field(ge=1, le=1024)
    threads_per_core: int = Field(1, ge=1, le=8)
    memory: str | int | None = Field(None, description="total (nodes split it evenly when none are given)")
    nodes: list[PlanNode] | None = Field(None, max_length=1024)


class PlanRequest(BaseModel):
    vms: list[PlanVM | str] = Field(min_length=1, max_length=4096, description="VM sizes: objects, or the CLI's "
                                    "[NAME=]VCPUSc:MEMORY[:SOCKETSxCORES[xTHREADS]] strings (e.g. mail1=4c:32G)")
    overcommit: float = Field(1.0, gt=0, le=1000, description="vCPUs per physical core before warning")
    topology: PlanTopology | None = Field(None, description="default: this host")


class PlannedVM(Out):
    name: str
    vcpus: int
    memory_mib: int
    topology: str
    nodes: list[int]
    cpus: str
    vcpupin: dict[int, int] = Field(description="vCPU -> host CPU")
    fits_one_node: bool
    xml: str = Field(description="the <numatune> and <cputune> elements to apply")


class NodeLeft(Out):
    id: int
    free_memory_mib: int
    free_cpus: str


class Plan(Out):
    topology: Topology
    overcommit: float
    total_vcpus: int
    vms: list[PlannedVM]
    warnings: list[str]
    nodes_left: list[NodeLeft]
    fits: bool


class Prepared(Out):
    changed: list[str] = Field(description="what was created or started (empty: all was ready)")


class RepairRequest(BaseModel):
    dry_run: bool = Field(False, description="change nothing; answer what would change")
    paths: list[str] | None = Field(None, max_length=256,
                                    description="only files under these files/directories (default: kvmkit's data "
                                                "directory, active pools' directories and every file a VM names)")


class ClearedRecord(Out):
    path: str
    removed: dict[str, str] = Field(description="libvirt attribute (without trusted.libvirt.security.) -> old value")
    owner_before: str | None
    owner_after: str | None = Field(description="set when the recorded owner was (or would be) given back")
    skipped: str | None = Field(description="why nothing was changed (the record changed or was locked meanwhile)")


class HeldRecord(Out):
    path: str
    vms: list[str] = Field(description="the running VMs using the file: its records are theirs, untouched")
    refs: int | None


class Repaired(Out):
    dry_run: bool
    scanned: int = Field(description="distinct files looked at")
    cleared: list[ClearedRecord]
    kept: list[HeldRecord]
    skipped: list[ClearedRecord]
