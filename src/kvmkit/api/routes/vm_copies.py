"""Copies of VMs as tasks: clone (full or linked), backup, restore (``kvmkit vm clone|backup|restore``).

- A clone and a restore make a new VM, so delegated users (who act only on granted VMs) may not.
- Backups: operators write them into kvmkit's data directory (``<data dir>/backups/<vm>/<UTC time>``, the
  default) and restore from there; a destination or source anywhere else on the host is for admins only.
- Each answers 202 with a task (percent and message follow the disk copies; the event stream shows it).
  The source VM is held while it is read, and the new VM's name is held while it is made; an interrupted
  copy is cleaned up when the server starts again (api/jobs/vm_copies.py).
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import libvirt
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from kvmkit.api.deps import check_vm_visible, require, require_unrestricted, state
from kvmkit.api.driver_limits import LIMITS
from kvmkit.api.jobs.submit import not_busy, submit
from kvmkit.api.models.responses import ACCEPTED
from kvmkit.errors import Conflict, InvalidInput
from kvmkit.service.access.auth import Forbidden, Principal
from kvmkit.service.vms.domains import domain

router = APIRouter(tags=["vm copies"], dependencies=[LIMITS])


def _name(value: str, what: str) -> str:
    from kvmkit.spec.common import as_value_error, validate_name

    return as_value_error(validate_name, value, what)


class CloneVM(BaseModel):
    name: str = Field(description="name of the new VM")
    linked: bool = Field(False, description="qcow2 overlays on a shared base instead of full copies (the source "
                                            "gets a disk-only snapshot 'linked-NAME' holding that base)")

    @field_validator("name")
    @classmethod
    def _new(cls, v: str) -> str:
        return _name(v, "clone name")


class BackupVM(BaseModel):
    destination: str | None = Field(None, description="a new or empty directory (absolute). Default: "
                                    "<data dir>/backups/<vm>/<UTC time>; elsewhere than <data dir>/backups "
                                    "only for admins")


class RestoreVM(BaseModel):
    path: str = Field(description="the directory a backup wrote (absolute); outside <data dir>/backups only "
                                  "for admins")
    name: str | None = Field(None, description="restore as a new VM (new UUID, MACs and serial log)")
    pool: str | None = Field(None, description="storage pool for the disks (default: default)")

    @field_validator("name")
    @classmethod
    def _new(cls, v: str | None) -> str | None:
        return None if v is None else _name(v, "VM name")

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        return None if v is None else _name(v, "pool name")


def backups_root() -> Path:
    from kvmkit.config import data_dir

    return data_dir() / "backups"


def _host_path(p: Principal, value: str, field: str) -> Path:
    """``value`` resolved; outside kvmkit's backup directory only for admins."""
    if not value.startswith("/") or "\x00" in value:
        raise InvalidInput(f"{field} {value!r} is not an absolute path", hint="give the full path, e.g. "
                           f"{backups_root()}/VM/STAMP")
    path = Path(value).resolve()
    root = backups_root().resolve()
    if not p.at_least("admin") and not path.is_relative_to(root):
        raise Forbidden(f"user '{p.name}' (role {p.role}) may use backups only under {root}, not {path}",
                        hint=f"leave the destination out (it defaults to {root}/VM/TIME) or ask an admin")
    return path


def _absent(conn: libvirt.virConnect, name: str) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(name)
        raise Conflict(f"a VM named '{name}' exists already", hint="pick another name or delete that VM")


@router.post("/vms/{name}/clone", status_code=202, responses=ACCEPTED)
def clone_vm(name: str, body: CloneVM, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Clone a shut-off or paused VM: new UUID, new MACs, disk files named after the new VM, its own
    serial log (``kvmkit vm clone SRC NEW [--linked]``)."""
    from kvmkit.api.jobs.vm_copies import clone_body

    require_unrestricted(p, "clone VMs (a clone is a new VM)")
    check_vm_visible(p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    not_busy(st, f"vm:{body.name}")
    conn = st.hv.get()
    domain(conn, name)
    _absent(conn, body.name)
    return submit(request, st, p, "vm.clone", f"vm:{name}", clone_body(st.hv.get, st.runner.hold, name, body.name,
                                                                        body.linked),
                  {"vm": body.name, "source": name, "linked": body.linked})


@router.post("/vms/{name}/backups", status_code=202, responses=ACCEPTED)
def backup_vm(name: str, body: BackupVM, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Back up a VM (running, paused or shut off): its definition, every disk as compressed qcow2 and a
    manifest with sha256 sums (``kvmkit vm backup NAME --to DIR``). The task's result has the ``path``."""
    from kvmkit.api.jobs.vm_copies import backup_body

    check_vm_visible(p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    domain(st.hv.get(), name)
    if body.destination is None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        dest = backups_root() / name / stamp
    else:
        dest = _host_path(p, body.destination, "destination")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise Conflict(f"backup destination {dest} exists and is not an empty directory",
                       hint="give a new or empty directory, or leave the destination out")
    return submit(request, st, p, "vm.backup", f"vm:{name}", backup_body(st.hv.get, name, str(dest)),
                  {"vm": name, "dest": str(dest)})


@router.post("/backups/restore", status_code=202, responses=ACCEPTED)
def restore_vm(body: RestoreVM, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Restore a VM from a backup; every sha256 is checked before anything is made; with ``name`` it is a new
    VM beside the original (``kvmkit vm restore DIR [--name N] [--pool P]``)."""
    from lxml import etree

    from kvmkit.api.jobs.vm_copies import restore_body
    from kvmkit.service.copies.backup import read_manifest

    require_unrestricted(p, "restore VMs (a restore makes a VM)")
    path = _host_path(p, body.path, "path")
    manifest = read_manifest(path)
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        root = etree.fromstring((path / manifest["domain_xml"]).read_bytes(), parser)
    except (OSError, etree.XMLSyntaxError) as err:
        raise InvalidInput(f"{manifest['domain_xml']} in {path} is not readable XML: {err}",
                           hint="the backup is damaged; use another backup") from err
    new = body.name or root.findtext("name") or manifest["vm"]
    st = state(request)
    not_busy(st, f"vm:{new}")
    _absent(st.hv.get(), new)
    nvram = root.findtext("os/nvram") if manifest.get("nvram") else None
    return submit(request, st, p, "vm.restore", f"vm:{new}",
                  restore_body(st.hv.get, str(path), new, body.name, body.pool, nvram),
                  {"vm": new, "path": str(path), "pool": body.pool or "default"})
