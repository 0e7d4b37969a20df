"""/api/v1/hosts: the inventory of libvirt hosts — ``kvmkit host add|list|show|remove|maintenance|set`` — and
/api/v1/placement (where a new VM would go, and why). Viewers read; admins change the inventory.

Every other route that works on a libvirt host takes ``?host=NAME`` (api/host_scope.py); without it, the
local host (``local``: the server's --connect URI).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from kvmkit.api.deps import require, state
from kvmkit.api.responses import Responses
from kvmkit.service.access.auth import Principal
from kvmkit.spec.host import HostLimits, HostSpec

router = APIRouter(tags=["hosts"])
NOT_FOUND: Responses = {404: {"description": "no such host in the inventory"}}


class HostRow(BaseModel):
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


class AddHost(HostSpec):
    """A host to add; ``check`` (default) adds it only when its libvirt answers."""

    check: bool = True


class Maintenance(BaseModel):
    on: bool = Field(description="true: placement gives it no new VMs; its VMs keep running")


class MaintenanceState(BaseModel):
    name: str
    maintenance: bool


class Limits(BaseModel):
    name: str
    max_memory_mib: int | None = None
    cpu_overcommit: float | None = None


class Removed(BaseModel):
    name: str
    removed: bool
    uri: str
    vms_left: list[str] | None = Field(None, description="the host's VMs when it was removed (None: forced)")


class PlacementRequest(BaseModel):
    vcpus: int = Field(1, ge=1, le=4096)
    memory: str | int = Field("512M", description="the VM's memory: 512M, 2G, 2048 (MiB)")


class Candidate(BaseModel):
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


class Placement(BaseModel):
    vcpus: int
    memory_mib: int
    chosen: str | None = Field(None, description="the host a create without ?host= would use (None: none fits)")
    reason: str | None = None
    candidates: list[Candidate]


@router.get("/hosts")
def list_hosts(request: Request, probe: bool = Query(True, description="the guest type as probed on each host"),
               _p: Principal = Depends(require("viewer"))) -> list[HostRow]:
    """Every host, asked at once (a dead one is listed as down, with the error)."""
    from kvmkit.service.hosts.manage import host_rows

    return [HostRow.model_validate(r) for r in host_rows(state(request).hosts, probe=probe)]


@router.post("/hosts", status_code=201, responses={409: {"description": "name or URI in the inventory already, "
                                                                   "or its libvirt does not answer (check)"}})
def add_host(body: AddHost, request: Request, _p: Principal = Depends(require("admin"))) -> HostRow:
    from kvmkit.service.hosts.manage import add_host as add

    spec = HostSpec.model_validate(body.model_dump(exclude={"check"}))
    return HostRow.model_validate(add(state(request).hosts, spec, check=body.check))


@router.get("/hosts/{name}", responses=NOT_FOUND)
def show_host(name: str, request: Request, _p: Principal = Depends(require("viewer"))) -> HostRow:
    from kvmkit.service.hosts.manage import show_host as show

    return HostRow.model_validate(show(state(request).hosts, name))


@router.delete("/hosts/{name}", responses={**NOT_FOUND, 409: {"description": "the host has VMs (or cannot "
                                                                           "be asked); force=true removes it"}})
def remove_host(name: str, request: Request,
                force: bool = Query(False, description="remove it even with VMs (they stay on it)"),
                _p: Principal = Depends(require("admin"))) -> Removed:
    from kvmkit.service.hosts.manage import remove_host as remove

    return Removed.model_validate(remove(state(request).hosts, name, force=force))


@router.post("/hosts/{name}/maintenance", responses=NOT_FOUND)
def set_maintenance(name: str, body: Maintenance, request: Request,
                    _p: Principal = Depends(require("admin"))) -> MaintenanceState:
    from kvmkit.service.hosts.manage import set_maintenance as maintenance

    return MaintenanceState.model_validate(maintenance(state(request).hosts, name, body.on))


@router.patch("/hosts/{name}", responses=NOT_FOUND)
def set_limits(name: str, body: HostLimits, request: Request, _p: Principal = Depends(require("admin"))) -> Limits:
    """Placement limits: memory VMs may use there, vCPUs per physical core."""
    from kvmkit.service.hosts.manage import set_limits as limits

    return Limits.model_validate(limits(state(request).hosts, name, body))


@router.post("/placement")
def placement(body: PlacementRequest, request: Request, _p: Principal = Depends(require("viewer"))) -> Placement:
    """Where a VM of this size would be created without ?host= (a dry run: nothing is made), and why each host
    was taken or refused. With only the local host, it is chosen when it fits."""
    from kvmkit.service.hosts.placement import place
    from kvmkit.spec.common import parse_size_mib

    return Placement.model_validate(place(state(request).hosts, vcpus=body.vcpus,
                                          memory_mib=parse_size_mib(body.memory, "memory")))
