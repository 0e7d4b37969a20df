"""Typed answers of /api/v1/hosts and /api/v1/placement (routes/hosts.py): what kvmkit.service.hosts
returns."""

from __future__ import annotations

from pydantic import Field

from kvmkit.api.models.base import Out


class HostRow(Out):
    name: str
    uri: str
    local: bool
    state: str = Field(description="up, down or maintenance (maintenance: up, but placement skips it)")
    maintenance: bool
    reachable: bool
    error: str | None = None
    ssh_key: str | None = None
    max_memory_mib: int | None = None
    cpu_overcommit: float | None = None
    virt_type: str | None = Field(None, description="kvm or qemu, as probed on that host")
    virt_type_reason: str | None = None
    hostname: str | None = None
    libvirt_version: str | None = None
    qemu_version: str | None = None
    cpu_model: str | None = None
    cpus: int | None = None
    cores: int | None = Field(None, description="physical cores")
    numa_nodes: int | None = None
    memory_mib: int | None = None
    free_memory_mib: int | None = None
    vms: int | None = None
    vms_running: int | None = None
    vcpus_running: int | None = None
    memory_running_mib: int | None = None


class MaintenanceState(Out):
    name: str
    maintenance: bool


class HostLimitsSet(Out):
    name: str
    max_memory_mib: int | None = None
    cpu_overcommit: float | None = None


class HostRemoved(Out):
    name: str
    removed: bool
    uri: str
    vms_left: list[str] | None = Field(None, description="the host's VMs when it was removed (None: forced)")


class PlacementCandidate(Out):
    name: str
    ok: bool
    reason: str
    state: str
    free_memory_mib: int | None = None
    available_mib: int | None = None
    memory_after_mib: int | None = None
    cores: int | None = None
    vcpus_after: int | None = None
    vcpu_limit: float | None = None
    cpu_overcommit: float | None = None
    numa_node: int | None = None
    notes: list[str] = []


class Placement(Out):
    vcpus: int
    memory_mib: int
    chosen: str | None = Field(None, description="the host a create without ?host= would use (None: none fits)")
    reason: str | None = None
    candidates: list[PlacementCandidate]
