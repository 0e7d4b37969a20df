"""/api/v1/hosts: the inventory of libvirt hosts — ``kvmkit host add|list|show|remove|maintenance|set`` — and
/api/v1/placement (where a new VM would go, and why). Viewers read; admins change the inventory.

Every other route that works on a libvirt host takes ``?host=NAME`` (api/host_scope.py); without it, the
local host (``local``: the server's --connect URI).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from kvmkit.api.deps import require, state
from kvmkit.api.models.hosts import HostLimitsSet, HostRemoved, HostRow, MaintenanceState, Placement
from kvmkit.api.models.responses import Responses
from kvmkit.service.access.auth import Principal
from kvmkit.spec.host import HostLimits, HostSpec

router = APIRouter(tags=["hosts"])
NOT_FOUND: Responses = {404: {"description": "no such host in the inventory"}}


class AddHost(HostSpec):
    """A host to add; ``check`` (default) adds it only when its libvirt answers."""

    check: bool = True


class Maintenance(BaseModel):
    on: bool = Field(description="true: placement gives it no new VMs; its VMs keep running")


class PlacementRequest(BaseModel):
    vcpus: int = Field(1, ge=1, le=4096)
    memory: str | int = Field("512M", description="the VM's memory: 512M, 2G, 2048 (MiB)")


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
                _p: Principal = Depends(require("admin"))) -> HostRemoved:
    from kvmkit.service.hosts.manage import remove_host as remove

    return HostRemoved.model_validate(remove(state(request).hosts, name, force=force))


@router.post("/hosts/{name}/maintenance", responses=NOT_FOUND)
def set_maintenance(name: str, body: Maintenance, request: Request,
                    _p: Principal = Depends(require("admin"))) -> MaintenanceState:
    from kvmkit.service.hosts.manage import set_maintenance as maintenance

    return MaintenanceState.model_validate(maintenance(state(request).hosts, name, body.on))


@router.patch("/hosts/{name}", responses=NOT_FOUND)
def set_limits(name: str, body: HostLimits, request: Request,
               _p: Principal = Depends(require("admin"))) -> HostLimitsSet:
    """Placement limits: memory VMs may use there, vCPUs per physical core."""
    from kvmkit.service.hosts.manage import set_limits as limits

    return HostLimitsSet.model_validate(limits(state(request).hosts, name, body))


@router.post("/placement")
def placement(body: PlacementRequest, request: Request, _p: Principal = Depends(require("viewer"))) -> Placement:
    """Where a VM of this size would be created without ?host= (a dry run: nothing is made), and why each host
    was taken or refused. With only the local host, it is chosen when it fits."""
    from kvmkit.service.hosts.placement import place
    from kvmkit.spec.common import parse_size_mib

    return Placement.model_validate(place(state(request).hosts, vcpus=body.vcpus,
                                          memory_mib=parse_size_mib(body.memory, "memory")))
