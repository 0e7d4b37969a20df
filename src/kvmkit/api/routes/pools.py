"""/api/v1/pools: storage pools, thin over kvmkit.service.storage.pools (the code of ``kvmkit pool``).

Viewers read; admins define, build, start, stop, refresh, autostart, delete and undefine (so only admins
ever name a pool target on the host). Define and build answer 202 with a task (``pool.define``,
``pool.build``): build runs mkfs or vgcreate, which take a while; a define with ``build``/``start`` that
fails in a later step is undone (stopped and undefined).
"""

from __future__ import annotations

from typing import Any, Literal

import libvirt
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from kvmkit.api.deps import require, require_unrestricted, state
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.api.models.storage import PoolAutostart, PoolDeleted, PoolInfo, PoolUndefined
from kvmkit.service.access.auth import Principal
from kvmkit.spec.storage import PoolSpec

router = APIRouter(prefix="/pools", tags=["pools"])
_404: dict[int | str, dict[str, Any]] = {404: {"description": "no such pool"}}
_TASK = dict(TASK_RESPONSES)  # 202: the Task model, with Location


@router.get("")
def list_pools(request: Request, p: Principal = Depends(require("viewer"))) -> list[PoolInfo]:
    """``kvmkit pool list``: every pool with capacity, allocation and available space."""
    from kvmkit.service.storage import pools
    require_unrestricted(p, "list storage pools")
    return [PoolInfo.model_validate(d) for d in pools.list_pools(state(request).hv.get())]


@router.get("/{name}", responses=_404)
def show_pool(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> PoolInfo:
    """``kvmkit pool info NAME``."""
    from kvmkit.service.storage import pools
    require_unrestricted(p, "read storage pools")
    return PoolInfo.model_validate(pools.pool_info(state(request).hv.get(), name))


@router.post("", status_code=202, responses=_TASK)
def define_pool(body: PoolSpec, request: Request, p: Principal = Depends(require("admin"))) -> JSONResponse:
    """``kvmkit pool define NAME --type ... [--build] [--start] [--autostart]`` as a task (``pool.define``).
    The XML is checked first (a type's required source field missing answers 422 at once); a later step
    that fails undoes the definition."""
    from kvmkit.service.storage import pools

    st = state(request)
    target = f"pool:{body.name}"
    not_busy(st, target)
    source = body.model_dump(include={"target", "source_dev", "source_host", "source_path", "source_name",
                                      "source_format"})
    pools.pool_xml(body.name, body.type, **source)  # 422 naming the missing field, before any task
    conn = st.hv.get()
    try:
        conn.storagePoolLookupByName(body.name)
    except libvirt.libvirtError:
        pass
    else:
        from kvmkit.errors import Conflict

        raise Conflict(f"storage pool '{body.name}' exists already", hint="choose another name or undefine it")

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection

        c = worker_connection(st.hv.get())
        ctx.step("define", 10, f"defining pool {body.name}", pool=body.name, type=body.type)
        d = pools.define_pool(c, body.name, body.type, **source)
        try:
            if body.build:
                ctx.step("build", 30, f"building pool {body.name}")
                d = pools.build_pool(c, body.name, overwrite=body.overwrite)
            if body.start:
                ctx.step("start", 70, f"starting pool {body.name}")
                d = pools.start_pool(c, body.name)
            if body.autostart:
                ctx.step("autostart", 90, f"autostart pool {body.name}")
                d = pools.set_autostart(c, body.name, True)
        except BaseException:
            pools.rollback_define(c, body.name)  # nothing half-made
            raise
        return d

    return submit(request, st, p, "pool.define", target, run, body.model_dump())


@router.post("/{name}/actions/build", status_code=202, responses=_TASK)
def build_pool(name: str, request: Request,
               overwrite: bool = Query(False, description="format the device even if it holds data"),
               p: Principal = Depends(require("admin"))) -> JSONResponse:
    """``kvmkit pool build NAME [--overwrite]`` as a task (``pool.build``): mkdir, mkfs, vgcreate."""
    from kvmkit.service.storage import pools

    st = state(request)
    not_busy(st, f"pool:{name}")
    pools.pool_info(st.hv.get(), name)  # 404 now rather than a failed task

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection

        ctx.step("build", 10, f"building pool {name}", pool=name, overwrite=overwrite)
        return pools.build_pool(worker_connection(st.hv.get()), name, overwrite=overwrite)

    return submit(request, st, p, "pool.build", f"pool:{name}", run, {"pool": name, "overwrite": overwrite})


@router.post("/{name}/actions/{action}", responses={**_404, 409: {"description": "busy or wrong state"}})
def pool_action(name: str, action: Literal["start", "stop", "refresh"], request: Request,
                _p: Principal = Depends(require("admin"))) -> PoolInfo:
    """``kvmkit pool start|stop|refresh NAME``."""
    from kvmkit.service.storage import pools
    fn = {"start": pools.start_pool, "stop": pools.stop_pool, "refresh": pools.refresh_pool}[action]
    st = state(request)
    with st.runner.hold(f"pool:{name}", f"pool.{action}"):
        return PoolInfo.model_validate(fn(st.hv.get(), name))


@router.patch("/{name}", responses={**_404, 409: {"description": "busy"}})
def set_pool(name: str, body: PoolAutostart, request: Request, _p: Principal = Depends(require("admin"))) -> PoolInfo:
    """``kvmkit pool autostart NAME [--off]``."""
    from kvmkit.service.storage import pools
    st = state(request)
    with st.runner.hold(f"pool:{name}", "pool.autostart"):
        return PoolInfo.model_validate(pools.set_autostart(st.hv.get(), name, body.autostart))


@router.delete("/{name}/storage", responses={**_404, 409: {"description": "running, busy or in use by VMs"}})
def delete_pool_storage(name: str, request: Request, _p: Principal = Depends(require("admin"))) -> PoolDeleted:
    """``kvmkit pool delete NAME``: remove a stopped pool's storage (rmdir, vgremove); refused while VM disks
    live in it. The pool stays defined (``DELETE /pools/{name}`` forgets it)."""
    from kvmkit.service.storage import pools
    st = state(request)
    with st.runner.hold(f"pool:{name}", "pool.delete"):
        return PoolDeleted.model_validate(pools.delete_pool(st.hv.get(), name))


@router.delete("/{name}", responses={**_404, 409: {"description": "running or busy"}})
def undefine_pool(name: str, request: Request, _p: Principal = Depends(require("admin"))) -> PoolUndefined:
    """``kvmkit pool undefine NAME``: forget a stopped pool (its storage stays)."""
    from kvmkit.service.storage import pools
    st = state(request)
    with st.runner.hold(f"pool:{name}", "pool.undefine"):
        return PoolUndefined.model_validate(pools.undefine_pool(st.hv.get(), name))
