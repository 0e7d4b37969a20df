"""POST /api/v1/vms/import: a VM from another hypervisor's package or disk, as a task (kind ``vm.import``).

The twin of ``kvmkit vm import``. The body is an ImportSpec (kvmkit.spec.vm_import):
``{"source": {"pool": P, "volume": V} | {"path": FILE}, "name": N, "pool": P, "os": ..., "start": ...}``.
Operators import a volume of a pool (e.g. an OVA they uploaded with the volume upload API); a host path
(``source.path``, ``virtio_win``) is for admins only. The task holds ``vm:NAME``; its progress follows the
steps of the import (read, check, convert, inspect, virt-v2v, define, start) and a cancel is honoured
between them, deleting what was made. An interrupted import is recovered like an interrupted create.
"""

from __future__ import annotations

import uuid
from typing import Any

import libvirt
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from kvmkit.api.deps import require, require_unrestricted, state
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.errors import Conflict
from kvmkit.service.access.auth import Forbidden, Principal
from kvmkit.spec.vm_import import ImportSpec

router = APIRouter(prefix="/vms", tags=["vms"])


def _register_recovery() -> None:
    from kvmkit.api.jobs.vms import recover_create
    from kvmkit.service.tasks.runner import RECOVERY

    RECOVERY.setdefault("vm.import", recover_create)  # the domain carrying the task id, then its volumes


_register_recovery()


@router.post("/import", status_code=202, responses={**TASK_RESPONSES, 422: {"description": "the package is "
                                                    "refused (truncated, unsafe, unknown format, too large)"}})
def import_vm(body: ImportSpec, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Import a VM (OVA/OVF, VMDK, VHD/VHDX, VDI, QCOW2 or raw): checked, converted into a pool, inspected,
    defined (and started with ``start``). The task's result says which path was taken (kvmkit or virt-v2v)."""
    require_unrestricted(p, "import VMs")
    host_paths = [f for f, v in (("source.path", body.source.path), ("virtio_win", body.virtio_win)) if v]
    if host_paths and not p.at_least("admin"):
        raise Forbidden(f"user '{p.name}' (role {p.role}) may not import from host paths ({', '.join(host_paths)})",
                        hint="upload the package into a pool volume and import {\"source\": {\"pool\": P, "
                             "\"volume\": V}}; or ask an admin")
    st = state(request)
    conn = st.hv.get()
    from kvmkit.service.v2v.importer import planned_name

    name = planned_name(conn, body)
    not_busy(st, f"vm:{name}")
    try:
        conn.lookupByName(name)
    except libvirt.libvirtError:
        pass
    else:
        raise Conflict(f"a VM named '{name}' exists already", hint="give another \"name\"")
    spec = body.model_copy(update={"name": name})
    task_id = str(uuid.uuid4())
    intent = {"vm": name, "pools": [spec.pool], "source": body.source.model_dump(), "via": spec.via,
              "start": spec.start}
    return submit(request, st, p, "vm.import", f"vm:{name}", _body(st.hv.get, spec, task_id), intent, task_id=task_id)


def _body(conn_get: Any, spec: ImportSpec, task_id: str) -> Any:
    def body(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.v2v.importer import import_vm as run

        last = [-1]

        def step(name: str, percent: float | None, message: str) -> None:
            if name.endswith("-progress"):  # frequent: progress only, and only when the whole percent moves
                if percent is not None and int(percent) != last[0]:
                    last[0] = int(percent)
                    ctx.progress(percent, message[:200])
                return
            ctx.step(name, None if percent is None else int(percent), message[:200])

        return run(worker_connection(conn_get()), spec, step=step, task_id=task_id)

    return body
