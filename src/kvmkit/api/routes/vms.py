"""/api/v1/vms: list (one bulk libvirt call), show, create, actions, delete, resources.

Creates, power actions and deletes answer 202 with a task. A second operation on a VM while one runs
answers 409 with the running task's id (``task_id``). Delegated users see only their granted VMs and get
404 for every other VM.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

import libvirt
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kvmkit.api.deps import check_vm_visible, require, require_unrestricted, state
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.api.models.base import Out
from kvmkit.api.models.vms import ResourcesChanged, VMDetail, VMRow
from kvmkit.api.vm_cache import VMListCache, encode, filtered, join_bodies
from kvmkit.errors import Conflict
from kvmkit.service.access.auth import Principal
from kvmkit.service.vms.domains import domain
from kvmkit.spec.vm import VMSpec

router = APIRouter(prefix="/vms", tags=["vms"])
Action = Literal["start", "shutdown", "reboot", "destroy", "suspend", "resume"]

class HostAnswer(Out):
    """How one host answered a VM list."""

    name: str
    state: Literal["up", "down", "timeout", "error"]
    error: str | None = None
    vms: int | None = Field(None, description="its VMs listed (null when it did not answer)")


class VMListReport(Out):
    """``?report=true``: the rows and how each host answered."""

    vms: list[VMRow]
    hosts: list[HostAnswer]


@router.get("", response_model=list[VMRow] | VMListReport)
async def list_vms(request: Request,
                   report: bool = Query(False, description="answer {vms, hosts}: the rows and each host's state"),
                   host_timeout: float = Query(5.0, gt=0, le=120, description="seconds to wait for each host"),
                   p: Principal = Depends(require("viewer"))) -> Response:
    """All VMs of every host (a delegated user sees only its granted VMs), each row's ``host`` naming its host;
    ``?host=NAME``: that host's only. Hosts are asked at once: one that is down or does not answer within
    ``host_timeout`` is left out and named in the X-Kvmkit-Unreachable-Hosts header (and in ``hosts`` with
    ``?report=true``). Rows are grouped by host (the local host first), by name within a host."""
    # Served from the server's event-refreshed VM lists (api/vm_cache.py, one per host) as ready JSON bytes:
    # no libvirt call, no per-row work and no worker thread while they are fresh; rebuilt in worker threads
    # when not.
    st = state(request)
    targets = _targets(st)
    if len(targets) == 1 and not report:  # one host: its list, as it is
        _name, cache, handle = targets[0]
        conn = handle.peek()
        snap = cache.lookup(conn) if conn is not None else None
        if snap is None:
            from starlette.concurrency import run_in_threadpool

            snap = await run_in_threadpool(cache.current)
        rows, body = snap
        if p.granted is not None:
            body = filtered(rows, p)
        return Response(body, media_type="application/json")
    answers = await asyncio.gather(*(_one_host(name, cache, handle, host_timeout) for name, cache, handle in targets))
    bodies, hosts = [], []
    for answer, got in answers:
        hosts.append(answer)
        if got is not None:
            rows, body = got
            bodies.append(filtered(rows, p) if p.granted is not None else body)
    body = join_bodies(bodies)
    missing = ", ".join(f"{h['name']}={h['state']}" for h in hosts if h["state"] != "up")
    headers = {"X-Kvmkit-Unreachable-Hosts": missing} if missing else None
    if report:
        body = b'{"vms":' + body + b',"hosts":' + encode(hosts) + b"}"
    return Response(body, media_type="application/json", headers=headers)


def _targets(st: Any) -> list[tuple[str, VMListCache, Any]]:
    """(name, VM list, handle) of the request's host, or of every host of the inventory."""
    from kvmkit.api.state import current_host

    named = current_host.get()
    if named:
        handle = st.host_handle(named)
        return [(named, st.vm_lists.of(named, handle), handle)]
    out = []
    for rec in st.hosts.cached():
        handle = st.host_handle(rec.name)
        out.append((rec.name, st.vm_lists.of(rec.name, handle), handle))
    return out


Snapshot = tuple[list[dict[str, Any]], bytes]


async def _one_host(name: str, cache: VMListCache, handle: Any,
                    timeout: float) -> tuple[dict[str, Any], Snapshot | None]:
    """One host's list (cached, or rebuilt in a worker thread within ``timeout``) and how the host answered."""
    conn = handle.peek()
    snap: Snapshot | None = cache.lookup(conn) if conn is not None else None
    if snap is not None:
        return {"name": name, "state": "up", "error": None, "vms": len(snap[0])}, snap
    from starlette.concurrency import run_in_threadpool

    from kvmkit.errors import KvmkitError

    try:
        built = await asyncio.wait_for(run_in_threadpool(cache.current), timeout)
    except TimeoutError:
        return {"name": name, "state": "timeout", "error": f"no answer in {timeout:g} s", "vms": None}, None
    except KvmkitError as err:
        state_ = "down" if err.code in ("host_down", "host") else "error"
        return {"name": name, "state": state_, "error": err.message, "vms": None}, None
    return {"name": name, "state": "up", "error": None, "vms": len(built[0])}, built


@router.get("/{name}", response_model=VMDetail,
            responses={404: {"description": "no such VM (or not delegated to you)"}})
def show_vm(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> dict[str, Any]:
    check_vm_visible(p, name)
    conn = state(request).hv.get()
    from kvmkit.api.state import current_host
    from kvmkit.service.vms.query import show_vm as show

    return {**show(conn, name), "host": current_host.get() or "local"}


class CreateVM(VMSpec):
    """A VM spec (see kvmkit.spec.vm.VMSpec) plus whether to start it once defined."""

    start: bool = False


@router.post("", status_code=202, responses=TASK_RESPONSES)
def create_vm(body: CreateVM, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Create (define, make new disks, optionally start) a VM. The task id is stored in the VM's metadata."""
    from kvmkit.service.access import policy

    require_unrestricted(p, "create VMs")
    st = state(request)
    decision = _place(st, body)
    conn = st.hv.get()
    policy.check_vm_spec(p, body, conn)  # host paths, host NICs, open VNC, other VMs' volumes: admins only
    if body.cloud_init is not None:
        body.cloud_init.check_files()  # only now, for a caller allowed to name host files: 422 up front
    not_busy(st, f"vm:{body.name}")
    try:
        conn.lookupByName(body.name)
        raise Conflict(f"a VM named '{body.name}' exists already", hint="pick another name or delete that VM")
    except libvirt.libvirtError:
        pass
    task_id = str(uuid.uuid4())
    # exclude_unset: the spec remembers which fields the caller gave (an --os preset fills only the others)
    data = body.model_dump(exclude={"start"}, exclude_unset=True)
    data["metadata"] = {**data.get("metadata", {}), "task": task_id}
    spec = VMSpec.model_validate(data)
    pools = sorted({d.pool or "default" for d in spec.disks if d.size})
    intent = {"vm": spec.name, "pools": pools or None, "start": body.start, "micro": spec.micro,
              "template": spec.template}
    from kvmkit.api.jobs.vms import create_body

    job = create_body(st.hv.get, spec, body.start)
    if decision is not None:
        intent["placement"] = decision["reason"]
        job = _with_placement(job, decision)
    return submit(request, st, p, "vm.create", f"vm:{spec.name}", job, intent, task_id=task_id)


def _place(st: Any, body: VMSpec) -> dict[str, Any] | None:
    """Without ?host= and with more than one host: choose one (placement) and make it the request's host."""
    from kvmkit.api.state import current_host

    if current_host.get() is not None or len(st.hosts.cached()) < 2:
        return None
    from kvmkit.service.hosts.placement import place, require_host

    decision = place(st.hosts, vcpus=body.vcpus, memory_mib=body.memory_mib)
    chosen = require_host(decision, body.name)
    current_host.set(None if chosen == "local" else chosen)
    return decision


def _with_placement(job: Any, decision: dict[str, Any]) -> Any:
    def body(ctx: Any) -> Any:
        result = job(ctx)
        return {**result, "host": decision["chosen"], "placement": decision} if isinstance(result, dict) else result

    return body


@router.post("/{name}/actions/{action}", status_code=202, responses=TASK_RESPONSES)
def vm_action(name: str, action: Action, request: Request,
              timeout: float = Query(60, ge=0, le=3600, description="shutdown: seconds to wait for the guest"),
              force: bool = Query(False, description="shutdown: power off when the guest does not stop in time"),
              p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Power actions: start, shutdown (ACPI; force after timeout), reboot, destroy, suspend, resume."""
    from kvmkit.api.jobs.vms import action_body

    check_vm_visible(p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    domain(st.hv.get(), name)
    return submit(request, st, p, f"vm.{action}", f"vm:{name}",
                   action_body(st.hv.get, name, action, timeout=timeout, force=force), {"vm": name})


@router.delete("/{name}", status_code=202, responses=TASK_RESPONSES)
def delete_vm(name: str, request: Request,
              storage: bool = Query(False, description="also delete the volumes only this VM uses"),
              force: bool = Query(False, description="power the VM off first if it runs"),
              p: Principal = Depends(require("operator"))) -> JSONResponse:
    from kvmkit.api.jobs.vms import delete_body

    check_vm_visible(p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    vm_uuid = str(domain(st.hv.get(), name).UUIDString())
    body = delete_body(st.hv.get, name, storage, force)

    def delete_and_ungrant(ctx: Any) -> Any:
        result = body(ctx)
        from kvmkit.service.access import auth

        with st.store.session() as s:  # the grants of this VM go with it: none passes to a later VM of the name
            auth.drop_vm_grants(s, name, vm_uuid)
        return result

    return submit(request, st, p, "vm.delete", f"vm:{name}", delete_and_ungrant, {"vm": name, "storage": storage})


class Resources(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False)

    vcpus: int | None = Field(None, ge=1, le=4096)
    memory: str | int | None = Field(None, description="e.g. 512M, 1G, 2048 (MiB); at most 16T")
    autostart: bool | None = None
    boot: list[Literal["hd", "cdrom", "network"]] | None = Field(
        None, min_length=1, max_length=3, description="boot order, e.g. [\"cdrom\", \"hd\"]: written to the "
        "definition only; libvirt applies it when the VM next starts (a running VM keeps its order until then)")
    live: bool | None = None
    config: bool | None = None

    @field_validator("boot")
    @classmethod
    def _boot(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(set(v)) != len(v):
            raise ValueError("name each boot device once, e.g. [\"cdrom\", \"hd\"]")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str | int | None) -> str | int | None:
        from kvmkit.spec.common import MAX_MEMORY_MIB, as_value_error, check_max, parse_size_mib

        if v is not None:
            mib = as_value_error(parse_size_mib, v, "memory")
            as_value_error(check_max, mib, MAX_MEMORY_MIB, "memory", "MiB", "use at most 16T (16 TiB)")
        return v


@router.patch("/{name}", response_model=ResourcesChanged, response_model_exclude_unset=True,
              responses={404: {"description": "no such VM"}, 409: {"description": "busy or wrong state"}})
def set_resources(name: str, body: Resources, request: Request,
                  p: Principal = Depends(require("operator"))) -> ResourcesChanged:
    """Change vCPUs, memory (live within the maximum and/or in the definition), autostart and the boot order
    (the definition only: it applies when the VM next starts)."""
    from kvmkit.service.vms import boot_order
    from kvmkit.service.vms import resources as vm_resources
    from kvmkit.spec.common import parse_size_mib

    check_vm_visible(p, name)
    st = state(request)
    conn = st.hv.get()
    domain(conn, name)
    out: dict[str, Any] = {"name": name}
    with st.runner.hold(f"vm:{name}", "vm.set"):
        checked_boot = None  # checked before anything else is changed
        if body.boot is not None:
            checked_boot = boot_order.check_boot(conn, name, list(body.boot), live=body.live, config=body.config)
        if body.vcpus is not None:
            out["vcpus"] = vm_resources.set_vcpus(conn, name, body.vcpus, live=body.live, config=body.config)
        if body.memory is not None:
            out["memory"] = vm_resources.set_memory(conn, name, parse_size_mib(body.memory), live=body.live,
                                                    config=body.config)
        if body.autostart is not None:
            out["autostart"] = vm_resources.set_autostart(conn, name, body.autostart)
        if checked_boot is not None and body.boot is not None:
            out["boot"] = boot_order.apply_boot(conn, checked_boot, list(body.boot))
    return ResourcesChanged.model_validate(out)


class Rename(BaseModel):
    name: str = Field(description="the new name")


class Renamed(Out):
    name: str
    old_name: str
    action: str
    state: str
    uuid: str


@router.post("/{name}/rename", responses={404: {"description": "no such VM"},
                                           409: {"description": "busy, running, or the new name is taken"}})
def rename_vm(name: str, body: Rename, request: Request, p: Principal = Depends(require("operator"))) -> Renamed:
    """Rename a shut-off VM; its disks, UUID and configuration stay (``kvmkit vm rename OLD NEW``). Delegated
    users may not: their grants name the VM."""
    import contextlib

    from kvmkit.service.vms import lifecycle as vm_lifecycle

    require_unrestricted(p, "rename VMs")
    st = state(request)
    conn = st.hv.get()
    with contextlib.ExitStack() as held:
        for target in dict.fromkeys((name, body.name)):
            held.enter_context(st.runner.hold(f"vm:{target}", "vm.rename"))
        return Renamed.model_validate(vm_lifecycle.rename(conn, name, body.name))
