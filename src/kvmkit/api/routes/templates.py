"""/api/v1/templates: qcow2 volumes marked as the base of new disks (the code of ``kvmkit template``).

Viewers list and read templates; admins mark and unmark them (a template is shared by every user, like a
pool); operators provision volumes from them: a linked clone by default (a qcow2 overlay, at once, whatever
the template's size) or a full copy, as a ``template.provision`` task holding the new volume.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from kvmkit.api.deps import require, require_unrestricted, state
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.api.models.storage import Template, TemplateUnmarked
from kvmkit.service.access.auth import Principal
from kvmkit.spec.storage import ProvisionSpec, TemplateSpec

router = APIRouter(prefix="/templates", tags=["templates"])
_404: dict[int | str, dict[str, Any]] = {404: {"description": "no such template"}}


@router.get("")
def list_templates(p: Principal = Depends(require("viewer"))) -> list[Template]:
    """``kvmkit template list``."""
    from kvmkit.service.storage.templates import list_templates as do_list

    require_unrestricted(p, "list templates")
    return [Template.model_validate(t) for t in do_list()]


@router.get("/{name}", responses=_404)
def show_template(name: str, p: Principal = Depends(require("viewer"))) -> Template:
    """One template (``kvmkit template list`` shows them all)."""
    from kvmkit.service.storage.templates import get_template

    require_unrestricted(p, "read templates")
    return Template.model_validate(get_template(name))


@router.post("", status_code=201, responses={404: {"description": "no such pool or volume"},
                                             409: {"description": "exists, or the volume is a VM's disk"},
                                             422: {"description": "not qcow2, or a bad name"}})
def mark(body: TemplateSpec, request: Request, _p: Principal = Depends(require("admin"))) -> Template:
    """``kvmkit template mark POOL VOLUME [--name T] [--description D]`` (qcow2 only)."""
    from kvmkit.service.storage.templates import mark as do_mark

    st = state(request)
    with st.runner.hold(f"volume:{body.pool}/{body.volume}", "template.mark"):
        return Template.model_validate(do_mark(st.hv.get(), body.pool, body.volume, name=body.name,
                                               description=body.description))


@router.delete("/{name}", responses=_404)
def unmark(name: str, _p: Principal = Depends(require("admin"))) -> TemplateUnmarked:
    """``kvmkit template unmark T``: the volume stays."""
    from kvmkit.service.storage.templates import unmark as do_unmark

    return TemplateUnmarked.model_validate(do_unmark(name))


@router.post("/{name}/provision", status_code=202,
             responses=TASK_RESPONSES)
def provision(name: str, body: ProvisionSpec, request: Request,
              p: Principal = Depends(require("operator"))) -> JSONResponse:
    """``kvmkit template provision T NEW_VOLUME [--pool P] [--full-clone]`` as a task
    (``template.provision``); the new volume is owned by the caller."""
    from kvmkit.service.storage.templates import get_template

    require_unrestricted(p, "provision volumes")
    st = state(request)
    entry = get_template(name)  # 404 now rather than a failed task
    pool = body.pool or entry["pool"]
    target = f"volume:{pool}/{body.volume}"
    not_busy(st, target)

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.storage import volume_marks
        from kvmkit.service.storage.templates import provision_from_template
        from kvmkit.service.storage.volumes import volume_info

        conn = worker_connection(st.hv.get())
        ctx.step("provision", 10, f"{'linking' if body.linked else 'copying'} template {name} to {pool}/{body.volume}",
                 template=name, pool=pool, volume=body.volume, linked=body.linked)
        path = provision_from_template(conn, name, body.volume, pool=body.pool, linked=body.linked)
        volume_marks.set_mark(path, owner=p.name)
        return {"template": name, "volume": body.volume, "pool": pool, "path": path, "linked": body.linked,
                "info": volume_info(conn, pool, body.volume)}

    return submit(request, st, p, "template.provision", target, run,
                  {"template": name, "pool": pool, "volume": body.volume, "linked": body.linked})
