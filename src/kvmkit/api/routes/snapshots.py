"""/api/v1/vms/{name}/snapshots: list (viewer); create, revert, delete as tasks (operator).

Snapshot operations hold the VM like any other VM task (409 with the running task's id), and delegated
users reach only the snapshots of their granted VMs (404 otherwise).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from kvmkit.api.deps import check_vm_visible, require, state
from kvmkit.api.jobs import snapshots as snapshot_jobs
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.api.models.vm_copies import SnapshotRow
from kvmkit.service.access.auth import Principal
from kvmkit.service.vms.domains import domain

router = APIRouter(prefix="/vms/{name}/snapshots", tags=["snapshots"])


class NewSnapshot(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=64, description="default: snap-<UTC time>")
    disk_only: bool = False
    description: str | None = Field(None, max_length=1000)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        from kvmkit.spec.common import as_value_error, validate_name

        return None if v is None else as_value_error(validate_name, v, "snapshot name")

    @field_validator("description")
    @classmethod
    def _description(cls, v: str | None) -> str | None:
        from kvmkit.spec.common import as_value_error, validate_text

        return None if v is None else as_value_error(validate_text, v, "snapshot description", max_len=1000)


@router.get("", response_model=list[SnapshotRow],
            responses={404: {"description": "no such VM (or not delegated to you)"}})
def list_snapshots(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> list[dict[str, Any]]:
    from kvmkit.service.copies import snapshots
    check_vm_visible(p, name)
    return snapshots.list_snapshots(state(request).hv.get(), name)


def _prepare(request: Request, p: Principal, name: str) -> Any:
    check_vm_visible(p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    domain(st.hv.get(), name)
    return st


@router.post("", status_code=202, responses=TASK_RESPONSES)
def create_snapshot(name: str, body: NewSnapshot, request: Request,
                    p: Principal = Depends(require("operator"))) -> JSONResponse:
    st = _prepare(request, p, name)
    run = snapshot_jobs.create_body(st.hv.get, name, body.name, body.disk_only, body.description)
    return submit(request, st, p, "vm.snapshot.create", f"vm:{name}", run, {"vm": name, "snapshot": body.name})


@router.post("/{snapshot}/revert", status_code=202, responses=TASK_RESPONSES)
def revert_snapshot(name: str, snapshot: str, request: Request,
                    p: Principal = Depends(require("operator"))) -> JSONResponse:
    st = _prepare(request, p, name)
    run = snapshot_jobs.revert_body(st.hv.get, name, snapshot)
    return submit(request, st, p, "vm.snapshot.revert", f"vm:{name}", run, {"vm": name, "snapshot": snapshot})


@router.delete("/{snapshot}", status_code=202, responses=TASK_RESPONSES)
def delete_snapshot(name: str, snapshot: str, request: Request,
                    p: Principal = Depends(require("operator"))) -> JSONResponse:
    st = _prepare(request, p, name)
    run = snapshot_jobs.delete_body(st.hv.get, name, snapshot)
    return submit(request, st, p, "vm.snapshot.delete", f"vm:{name}", run, {"vm": name, "snapshot": snapshot})
