"""A VM at run time: CPU pinning (``kvmkit vm pin``), counters (``kvmkit vm stats``) and the serial console's
log (``kvmkit vm console NAME --log``; the interactive console is the WebSocket /api/v1/vms/{name}/console/ws).

The counters of every VM come from one bulk libvirt call at ``GET /api/v1/vm-stats`` (``/vms/stats`` would be
a VM named "stats"); a delegated user gets the rows of its granted VMs only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, field_validator

from kvmkit.api.deps import check_vm_visible, require, state
from kvmkit.api.driver_limits import LIMITS
from kvmkit.api.models.base import Out
from kvmkit.api.models.host import bounded_cpulist
from kvmkit.api.models.responses import Responses
from kvmkit.errors import InvalidInput
from kvmkit.service.access.auth import Principal
from kvmkit.service.vms.domains import domain

router = APIRouter(tags=["vm runtime"], dependencies=[LIMITS])
NOT_FOUND: Responses = {404: {"description": "no such VM (or not delegated to you)"}}


class Pinning(Out):
    name: str
    vcpupin: dict[str, str] = Field(description="vCPU number -> host CPU list")
    emulatorpin: str = Field(description="host CPU list of QEMU's emulator threads")
    live: bool | None = Field(None, description="the change applied to the running VM")
    config: bool | None = Field(None, description="the change applied to the definition")
    node: int | None = Field(None, description="auto: the NUMA node chosen")
    node_free_mib: int | None = None
    numatune: dict[str, str] | None = Field(None, description="auto with config: the memory binding saved")
    warning: str | None = None


class Pin(BaseModel):
    vcpus: dict[int, str] = Field(default_factory=dict, description='vCPU -> host CPU list, e.g. {"0": "2-3"}')
    emulator: str | None = Field(None, description="host CPU list for the emulator threads")
    auto: bool = Field(False, description="pick CPUs in the NUMA node with the most free memory")
    live: bool | None = Field(None, description="the running VM (default: when it runs)")
    config: bool | None = Field(None, description="the definition (default: when the VM is defined)")

    @field_validator("vcpus")
    @classmethod
    def _vcpus(cls, v: dict[int, str]) -> dict[int, str]:
        if len(v) > 4096 or any(not 0 <= k < 4096 for k in v):
            raise ValueError("vCPU numbers are 0-4095")
        return {k: bounded_cpulist(c, f"vcpus[{k}]") for k, c in v.items()}

    @field_validator("emulator")
    @classmethod
    def _emulator(cls, v: str | None) -> str | None:
        return None if v is None else bounded_cpulist(v, "emulator")


@router.get("/vms/{name}/pin", responses=NOT_FOUND)
def show_pinning(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> Pinning:
    """Current vCPU and emulator pinning (live when running, else the definition)."""
    from kvmkit.service.vms import pinning

    check_vm_visible(p, name)
    dom = domain(state(request).hv.get(), name)
    return Pinning.model_validate({"name": name, **pinning.pin_info(dom)})


@router.put("/vms/{name}/pin", responses={**NOT_FOUND, 409: {"description": "busy or in the wrong state"}})
def set_pinning(name: str, body: Pin, request: Request, p: Principal = Depends(require("operator"))) -> Pinning:
    """Pin vCPUs and emulator threads to host CPUs (all or nothing), or ``auto`` within one NUMA node."""
    from kvmkit.service.vms import pinning

    check_vm_visible(p, name)
    st = state(request)
    conn = st.hv.get()
    domain(conn, name)
    with st.runner.hold(f"vm:{name}", "vm.pin"):
        if body.auto:
            if body.vcpus or body.emulator:
                raise InvalidInput("auto chooses the CPUs itself", hint="drop vcpus/emulator or auto")
            out = pinning.auto_pin(conn, name, live=body.live, config=body.config)
        else:
            out = pinning.pin(conn, name, vcpus=body.vcpus, emulator=body.emulator, live=body.live,
                              config=body.config)
    return Pinning.model_validate(out)


class BlockStats(Out):
    name: str | None = None
    path: str | None = None
    rd_reqs: int | None = None
    rd_bytes: int | None = None
    wr_reqs: int | None = None
    wr_bytes: int | None = None
    capacity: int | None = None
    allocation: int | None = None


class NetStats(Out):
    name: str | None = None
    rx_bytes: int | None = None
    rx_pkts: int | None = None
    rx_errs: int | None = None
    rx_drop: int | None = None
    tx_bytes: int | None = None
    tx_pkts: int | None = None
    tx_errs: int | None = None
    tx_drop: int | None = None


class VMStats(Out):
    name: str
    state: str
    cpu_time_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    vcpus: int | None = None
    max_vcpus: int | None = None
    balloon_current_kib: int | None = None
    balloon_max_kib: int | None = None
    balloon_rss_kib: int | None = None
    guest_memory: dict[str, int] = Field(default_factory=dict, description="what the balloon driver reports: "
                                         "available, usable, unused, disk_caches, last-update")
    block: list[BlockStats]
    net: list[NetStats]


@router.get("/vms/{name}/stats", responses=NOT_FOUND)
def vm_stats(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> VMStats:
    """CPU time, vCPUs, memory and balloon, block and network counters of one VM."""
    from kvmkit.service.vms import resources

    check_vm_visible(p, name)
    return VMStats.model_validate(resources.stats(state(request).hv.get(), name)[0])


@router.get("/vm-stats")
def all_vm_stats(request: Request, p: Principal = Depends(require("viewer"))) -> list[VMStats]:
    """The counters of every VM (a delegated user: of its granted VMs), from one bulk libvirt call."""
    from kvmkit.service.vms import resources

    rows: list[dict[str, Any]] = resources.stats(state(request).hv.get())
    return [VMStats.model_validate(r) for r in rows if p.may_see_vm(r["name"])]


class ConsoleLog(Out):
    name: str
    path: str = Field(description="the serial log file on the host")
    text: str


@router.get("/vms/{name}/console/log", responses=NOT_FOUND)
def console_log(name: str, request: Request,
                tail: int | None = Query(None, ge=0, le=1_000_000, description="only the last N lines"),
                p: Principal = Depends(require("operator"))) -> ConsoleLog:
    """What the VM wrote on its serial console (its log file). Operators: it is the console's output."""
    from kvmkit.service.vms import console

    check_vm_visible(p, name)
    return ConsoleLog.model_validate(console.read_log(state(request).hv.get(), name, tail=tail))
