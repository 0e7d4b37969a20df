"""/api/v1/vms: list (one bulk libvirt call), show, create, actions, delete, resources.

Creates, power actions and deletes answer 202 with a task. A second operation on a VM while one runs
answers 409 with the running task's id (``task_id``). Delegated users see only their granted VMs and get
404 for every other VM.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

import libvirt
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from kvmkit.api.deps import check_vm_visible, require, require_unrestricted, state
from kvmkit.api.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.api.vm_cache import filtered
from kvmkit.errors import Conflict
from kvmkit.service.access.auth import Forbidden, Principal
from kvmkit.service.vms.domains import domain
from kvmkit.spec.vm import VMSpec

router = APIRouter(prefix="/vms", tags=["vms"])
Action = Literal["start", "shutdown", "reboot", "destroy", "suspend", "resume"]

@router.get("", response_model=list[dict[str, Any]])
async def list_vms(request: Request, p: Principal = Depends(require("viewer"))) -> Response:
    """All VMs (a delegated user sees only its granted VMs)."""
    # Served from the server's event-refreshed VM list (api/vm_cache.py) as ready JSON bytes: no libvirt
    # call, no per-row work and no worker thread while it is fresh; rebuilt in a worker thread when not.
    st = state(request)
    cache = st.vm_list
    conn = st.hv.peek()
    snap = cache.lookup(conn) if conn is not None else None
    if snap is not None:
        rows, body = snap
    else:
        from starlette.concurrency import run_in_threadpool

        rows, body = await run_in_threadpool(cache.current)
    if p.granted is not None:
        body = filtered(rows, p.granted)
    return Response(body, media_type="application/json")


@router.get("/{name}", responses={404: {"description": "no such VM (or not delegated to you)"}})
def show_vm(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> dict[str, Any]:
    check_vm_visible(p, name)
    conn = state(request).hv.get()
    from kvmkit.service.vms.query import show_vm as show

    return dict(show(conn, name))


def host_paths(spec: VMSpec) -> list[str]:
    """The spec fields that name files or devices on the host (read, attached or written by libvirt as root)."""
    fields = [f"disks[{i}].path" for i, d in enumerate(spec.disks) if d.path]
    fields += [f for f in ("kernel", "initrd", "serial_log") if getattr(spec, f)]
    ci = spec.cloud_init
    if ci is not None:
        fields += [f"cloud_init.{f}" for f in ("user_data", "meta_data", "ssh_key", "password_file")
                   if getattr(ci, f, None)]
    return fields


def _refuse_host_paths(p: Principal, spec: VMSpec) -> None:
    """Only admins may point a VM at host paths: an operator could otherwise attach a host disk, read any host
    file into a guest (kernel, cloud-init) or have libvirt overwrite one (serial log). Operators use pool
    volumes, templates and the micro-guest."""
    fields = host_paths(spec)
    if fields and not p.at_least("admin"):
        raise Forbidden(f"user '{p.name}' (role {p.role}) may not use host paths ({', '.join(fields)})",
                        hint="use pool volumes (disks: volume/pool or size), a template or micro; or ask an admin")


class CreateVM(VMSpec):
    """A VM spec (see kvmkit.spec.vm.VMSpec) plus whether to start it once defined."""

    start: bool = False


@router.post("", status_code=202, responses=TASK_RESPONSES)
def create_vm(body: CreateVM, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Create (define, make new disks, optionally start) a VM. The task id is stored in the VM's metadata."""
    require_unrestricted(p, "create VMs")
    _refuse_host_paths(p, body)
    st = state(request)
    not_busy(st, f"vm:{body.name}")
    conn = st.hv.get()
    try:
        conn.lookupByName(body.name)
        raise Conflict(f"a VM named '{body.name}' exists already", hint="pick another name or delete that VM")
    except libvirt.libvirtError:
        pass
    task_id = str(uuid.uuid4())
    data = body.model_dump(exclude={"start"})
    data["metadata"] = {**data.get("metadata", {}), "task": task_id}
    spec = VMSpec.model_validate(data)
    pools = sorted({d.pool or "default" for d in spec.disks if d.size})
    intent = {"vm": spec.name, "pools": pools or None, "start": body.start, "micro": spec.micro,
              "template": spec.template}
    from kvmkit.api.vm_jobs import create_body

    return submit(request, st, p, "vm.create", f"vm:{spec.name}", create_body(st.hv.get, spec, body.start), intent,
                   task_id=task_id)


@router.post("/{name}/actions/{action}", status_code=202, responses=TASK_RESPONSES)
def vm_action(name: str, action: Action, request: Request,
              timeout: float = Query(60, ge=0, le=3600, description="shutdown: seconds to wait for the guest"),
              force: bool = Query(False, description="shutdown: power off when the guest does not stop in time"),
              p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Power actions: start, shutdown (ACPI; force after timeout), reboot, destroy, suspend, resume."""
    from kvmkit.api.vm_jobs import action_body

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
    from kvmkit.api.vm_jobs import delete_body

    check_vm_visible(p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    domain(st.hv.get(), name)
    return submit(request, st, p, "vm.delete", f"vm:{name}", delete_body(st.hv.get, name, storage, force),
                   {"vm": name, "storage": storage})


class Resources(BaseModel):
    vcpus: int | None = Field(None, ge=1, le=4096)
    memory: str | int | None = Field(None, description="e.g. 512M, 1G, 2048 (MiB)")
    autostart: bool | None = None
    live: bool | None = None
    config: bool | None = None


@router.patch("/{name}", responses={404: {"description": "no such VM"}, 409: {"description": "busy or wrong state"}})
def set_resources(name: str, body: Resources, request: Request,
                  p: Principal = Depends(require("operator"))) -> dict[str, Any]:
    """Change vCPUs, memory (live within the maximum and/or in the definition) and autostart."""
    from kvmkit.service.vms import resources as vm_resources
    from kvmkit.spec.common import parse_size_mib

    check_vm_visible(p, name)
    st = state(request)
    conn = st.hv.get()
    domain(conn, name)
    out: dict[str, Any] = {"name": name}
    with st.runner.hold(f"vm:{name}", "vm.set"):
        if body.vcpus is not None:
            out["vcpus"] = vm_resources.set_vcpus(conn, name, body.vcpus, live=body.live, config=body.config)
        if body.memory is not None:
            out["memory"] = vm_resources.set_memory(conn, name, parse_size_mib(body.memory), live=body.live,
                                                    config=body.config)
        if body.autostart is not None:
            out["autostart"] = vm_resources.set_autostart(conn, name, body.autostart)
    return out
