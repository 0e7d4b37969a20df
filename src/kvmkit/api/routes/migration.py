"""Migration: ``POST /api/v1/vms/{name}/migrate`` (``kvmkit vm migrate``), ``POST /api/v1/vms/{name}/migrate/check``
(``--check``),
``POST /api/v1/hosts/{name}/evacuate`` (``kvmkit host evacuate``), ``GET /api/v1/placement/cpu-baseline``
(``kvmkit host cpu-baseline``).

Admins only. Moving a VM decides which host carries it — another host's memory and CPUs, its storage, past
placement and maintenance — which is managing hosts, the admins' part in kvmkit (as oVirt keeps migration
to its administrator roles); operators act on VMs where they are.

The VM's host is ``?host=`` (default local), the destination ``to`` in the body. The pre-checks run before
the task is made: a refusal answers 409 with every check (``checks``). The task holds the VM on its host
and its name on the destination; its percent and message follow libvirt's job statistics, and each poll
goes on the event stream as ``{"type": "migration", "task", "vm", "host", "to", "data_remaining",
"memory_bps", "expected_downtime_ms", ...}``. A cancel of the task aborts the migration job.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from kvmkit.api.deps import require, state
from kvmkit.api.jobs.submit import not_busy, submit
from kvmkit.api.models.migration import CpuBaseline, MigrationPlan
from kvmkit.api.models.responses import ACCEPTED
from kvmkit.service.access.auth import Principal
from kvmkit.service.tasks.runner import RECOVERY, Busy, TaskContext, TaskRunner
from kvmkit.spec.migration import EvacuateSpec, MigrateSpec

router = APIRouter(tags=["migration"])  # host-scoped (?host= is the VM's host)
hosts_router = APIRouter(tags=["migration"])  # not host-scoped
REFUSED = {**ACCEPTED, 409: {"description": "refused by a pre-check (``checks`` lists them all), busy, or the VM "
                             "is on the destination already"}}


def _host_target(host: str, target: str) -> str:
    return target if host == "local" else f"{target}@{host}"


def _plan(request: Request, name: str, body: MigrateSpec) -> tuple[Any, Any, Any, str]:
    from kvmkit.api.state import current_host
    from kvmkit.service.migration.precheck import endpoints, plan_migration

    st = state(request)
    source = current_host.get() or "local"
    src, dst = endpoints(st.hosts, source, body.to)
    return src, dst, plan_migration(src, dst, name, body), source


@router.post("/vms/{name}/migrate/check", responses={404: {"description": "no such VM or host"}})
def check_migration(name: str, body: MigrateSpec, request: Request,
                    _p: Principal = Depends(require("admin"))) -> MigrationPlan:
    """The pre-checks alone (nothing is changed): what a migration would do, and what refuses it."""
    _src, _dst, plan, _source = _plan(request, name, body)
    return MigrationPlan.model_validate(plan.to_dict())


@router.post("/vms/{name}/migrate", status_code=202, responses=REFUSED)
def migrate(name: str, body: MigrateSpec, request: Request, p: Principal = Depends(require("admin"))) -> JSONResponse:
    """Move the VM to host ``to``: live (the default for a running VM; shared storage, or ``copy_storage``) or
    offline. Pre-checks first (409 with ``checks`` when one fails); then a task (its result: flags, whether
    VIR_MIGRATE_UNSAFE was passed and why, job time, measured downtime)."""
    from kvmkit.service.migration.precheck import require as require_plan

    st = state(request)
    not_busy(st, f"vm:{name}")
    dest_target = _host_target(body.to, f"vm:{name}")
    running = TaskRunner.busy_with(st.runner, dest_target)
    if running:
        raise Busy(dest_target, running, "another operation")
    src, dst, plan, source = _plan(request, name, body)
    require_plan(plan)
    src_get, dst_get = st.hosts.resolve(source).get, st.hosts.resolve(body.to).get

    def job(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.migration.migrate import migrate_vm
        from kvmkit.service.migration.model import Endpoint

        ctx.step("migrate", 2, f"migrating VM {name} from host {source} to host {body.to} ({plan.mode})", vm=name,
                 to=body.to, mode=plan.mode, copies=[d.path for d in plan.copies])
        ctx.check_cancel()
        s = Endpoint(src.name, src.uri, worker_connection(src_get()), src.maintenance)
        d = Endpoint(dst.name, dst.uri, worker_connection(dst_get()), dst.maintenance, dst.max_memory_mib,
                     dst.cpu_overcommit)
        follow = _follower(st, ctx, name, source, body.to)
        with TaskRunner.hold(st.runner, dest_target, "vm.migrate"):
            return migrate_vm(s, d, name, body, plan=plan, progress=follow,
                              cancelled=lambda: ctx.cancel_requested)

    return submit(request, st, p, "vm.migrate", f"vm:{name}", job,
                  {"vm": name, "to": body.to, "mode": plan.mode, "copy_storage": body.copy_storage})


def _follower(st: Any, ctx: TaskContext, vm: str, source: str, to: str) -> Any:
    """Progress into the task (percent 5..95, message) and onto the event stream."""
    def follow(p: dict[str, Any]) -> None:
        ctx.progress(5 + 0.9 * float(p.get("percent") or 0), f"{vm} -> {to}: {p.get('message') or ''}"[:200])
        try:
            st.hub.publish({"type": "migration", "task": ctx.id, "vm": vm, "host": source, "to": to, **p})
        except Exception:  # events are best effort
            pass

    return follow


@hosts_router.post("/hosts/{name}/evacuate", status_code=202, responses=ACCEPTED)
def evacuate(name: str, body: EvacuateSpec, request: Request, p: Principal = Depends(require("admin"))) -> JSONResponse:
    """Maintenance on, then every VM of the host moves to the host placement picks (running ones live,
    shut-off ones offline); the task's result lists what moved and what could not, with each host's reason."""
    st = state(request)
    st.hosts.record(name)  # 404 naming it
    target = f"host:{name}"

    def job(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.migration.evacuate import evacuate_host

        ctx.step("evacuate", 1, f"evacuating host {name}", host=name)
        ctx.check_cancel()

        def on_vm(vm: str, data: dict[str, Any]) -> None:
            try:
                st.hub.publish({"type": "migration", "task": ctx.id, "vm": vm, "host": name, **data})
            except Exception:
                pass

        return evacuate_host(st.hosts, name, body, connect=worker_connection,
                             progress=lambda pct, msg: ctx.progress(pct, msg),
                             cancelled=lambda: ctx.cancel_requested,
                             hold=lambda t: TaskRunner.hold(st.runner, t, "host.evacuate"), on_progress=on_vm)

    not_busy(st, target)
    return submit(request, st, p, "host.evacuate", target, job, {"host": name})


@hosts_router.get("/placement/cpu-baseline", responses={
    404: {"description": "a host named in hosts is not in the inventory"},
    409: {"description": "no host (of those named) can say which CPU it gives its guests"}})
def cpu_baseline(request: Request, hosts: list[str] = Query(default=[], description="only these hosts"),
                 virt_type: str | None = Query(None, pattern="^(kvm|qemu)$"),
                 _p: Principal = Depends(require("viewer"))) -> CpuBaseline:
    """A CPU model every host can give its guests (``kvmkit host cpu-baseline``): create VMs with it so that
    they can migrate between those hosts."""
    from kvmkit.service.migration.cpu_baseline import cpu_baseline as baseline

    return CpuBaseline.model_validate(baseline(state(request).hosts, names=hosts or None, virt_type=virt_type))


def _recover(conn: Any, task: dict[str, Any], _steps: list[dict[str, Any]]) -> list[str]:
    """A server that died mid-migration: libvirt (peer-to-peer) finished or rolled it back on its own; say
    where the VM is on its host."""
    import libvirt

    vm = (task.get("intent") or {}).get("vm")
    to = (task.get("intent") or {}).get("to")
    if not vm or conn is None:
        return []
    try:
        dom = conn.lookupByName(vm)
        return [f"VM {vm} is still on its host ({'running' if dom.isActive() else 'shut off'}); "
                f"check host {to} has no copy"]
    except libvirt.libvirtError:
        return [f"VM {vm} is no longer on its host: the migration to host {to} completed without the server"]


RECOVERY["vm.migrate"] = _recover
