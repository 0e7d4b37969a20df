"""/api/v1/vms/{name}/exec, /password, /seed/eject and /guest/...: inside the guest (operators only).

Through the guest agent (running VM): ``POST exec`` runs a command and answers when it exits or its
timeout passes (synchronous: the output is the answer, it is never stored in a task); ``POST password``
sets a guest user's password (write-only field); ``POST seed/eject`` ejects the cloud-init seed once the
agent reports cloud-init done (a task: it may wait).

Offline (libguestfs, shut-off VM; ``readonly=true`` reads a running VM): ``GET guest/inspect``,
``guest/ls``, ``guest/cat`` (the file's bytes), ``guest/df``, ``guest/copy-out`` (a file, or a directory as
tar); ``POST guest/copy-in?path=`` writes the request body as a guest file. Each holds the VM (409 while
another operation runs on it) and takes 20-60 s under TCG (one appliance per request). Exec, password,
cat, copy-out and copy-in are audited. Paths are guest paths; no host path is involved.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from starlette.background import BackgroundTask

from kvmkit.api.deps import check_vm_visible, require, state
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.api.models.vm_guest import (
    CopiedIn,
    ExecResult,
    GuestDf,
    GuestInspection,
    GuestListing,
    PasswordResult,
)
from kvmkit.errors import InvalidInput
from kvmkit.service.access.auth import Principal
from kvmkit.service.tasks.runner import TaskContext

router = APIRouter(prefix="/vms/{name}", tags=["guests"])
MAX_UPLOAD = 1024 * 1024 * 1024  # copy-in body limit (1 GiB)
ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"description": "not an operator"}, 404: {"description": "no such VM, guest file or not delegated to you"},
    409: {"description": "the VM is in the wrong state (running, no agent ...) or busy with another operation"}}
READONLY = Query(False, description="read a running VM's disks as they are now (copy-in: never)")


class ExecBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    command: list[str] = Field(..., min_length=1, description="argv: the program and its arguments (no shell)")
    timeout: float = Field(60, gt=0, le=600, description="seconds to wait for it to exit")
    input: str | None = Field(None, description="text fed to the command's stdin")
    input_b64: str | None = Field(None, description="bytes fed to its stdin, base64 (instead of input)")


class PasswordBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user: str = Field(..., min_length=1, max_length=64, description="the guest user, e.g. root")
    password: SecretStr = Field(..., description="write-only: never stored, logged or echoed")


class EjectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float = Field(0, ge=0, le=3600, description="seconds to wait for cloud-init to finish")
    force: bool = Field(False, description="eject without asking the guest agent")


def _vm(request: Request, p: Principal, name: str) -> Any:
    check_vm_visible(p, name)
    return state(request).hv.get()


@contextmanager
def _held(request: Request, name: str, what: str, readonly: bool) -> Iterator[None]:
    """Hold the VM while libguestfs has its disks open (a read of a running VM with readonly holds nothing)."""
    st = state(request)
    from kvmkit.service.vms.domains import domain

    if readonly and domain(st.hv.get(), name).isActive():
        yield
        return
    with st.runner.hold(f"vm:{name}", what):
        yield


def _audit(request: Request, p: Principal, action: str, name: str, detail: str) -> None:
    from kvmkit.service.access import audit

    client = request.client
    audit.record(state(request).store, p.name, action, f"vm:{name}", "ok", detail, client.host if client else None)


@router.post("/exec", responses=ERRORS)
def exec_command(name: str, body: ExecBody, request: Request,
                 p: Principal = Depends(require("operator"))) -> ExecResult:
    """Run a command in the guest through its agent; answers when it exits or after ``timeout`` (then it
    is still running in the guest as ``pid``: the agent cannot stop it)."""
    from kvmkit.service.guests.exec import exec_command as run

    if body.input is not None and body.input_b64 is not None:
        raise InvalidInput("give input or input_b64, not both")
    try:
        data = base64.b64decode(body.input_b64, validate=True) if body.input_b64 is not None else \
            (body.input.encode() if body.input is not None else None)
    except ValueError:
        raise InvalidInput("input_b64 is not base64", hint="encode the bytes with base64") from None
    conn = _vm(request, p, name)
    request.state.audit_detail = f"exec {body.command[0]!r} ({len(body.command) - 1} argument(s))"
    result = run(conn, name, body.command, timeout=body.timeout, input_data=data)
    request.state.audit_detail += f": exit {result['exit_code']}" if result["exited"] else ": still running"
    return ExecResult(**result)


@router.post("/password", responses=ERRORS)
def set_password(name: str, body: PasswordBody, request: Request,
                 p: Principal = Depends(require("operator"))) -> PasswordResult:
    """Set a guest user's password through the agent (the password is not echoed, stored or logged)."""
    from kvmkit.service.guests.exec import set_password as run

    conn = _vm(request, p, name)
    request.state.audit_detail = f"user {body.user}"
    return PasswordResult(**run(conn, name, body.user, body.password.get_secret_value()))


@router.post("/seed/eject", status_code=202, responses=TASK_RESPONSES)
def eject_seed(name: str, body: EjectBody, request: Request,
               p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Detach and delete the cloud-init seed once the agent reports cloud-init done (a task)."""
    from kvmkit.service.vms.domains import domain
    from kvmkit.service.vms.seed import eject

    conn = _vm(request, p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    domain(conn, name)

    def run(ctx: TaskContext) -> dict[str, Any]:
        ctx.step("eject", 10, f"waiting for cloud-init in VM {name}", vm=name, wait=body.wait)
        return eject(st.hv.get(), name, wait=body.wait, force=body.force)

    return submit(request, st, p, "vm.seed.eject", f"vm:{name}", run, {"vm": name})


@router.get("/guest/inspect", responses=ERRORS)
def guest_inspect(name: str, request: Request, readonly: bool = READONLY,
                  p: Principal = Depends(require("operator"))) -> GuestInspection:
    """The guest's operating system(s): distribution, version, hostname, mount points, file systems."""
    from kvmkit.service.guests.offline import inspect

    conn = _vm(request, p, name)
    with _held(request, name, "guest.inspect", readonly):
        return GuestInspection(**inspect(conn, name, readonly=readonly))


@router.get("/guest/ls", responses=ERRORS)
def guest_ls(name: str, request: Request, path: str = Query("/", description="guest path"),
             recursive: bool = Query(False), readonly: bool = READONLY,
             p: Principal = Depends(require("operator"))) -> GuestListing:
    """A guest directory's entries (or the file itself); ``recursive``: the whole tree below it."""
    from kvmkit.service.guests.offline import ls

    conn = _vm(request, p, name)
    with _held(request, name, "guest.ls", readonly):
        return GuestListing(**ls(conn, name, path, recursive=recursive, readonly=readonly))


@router.get("/guest/df", responses=ERRORS)
def guest_df(name: str, request: Request, readonly: bool = READONLY,
             p: Principal = Depends(require("operator"))) -> GuestDf:
    """Size and use of every file system on the VM's disks."""
    from kvmkit.service.guests.offline import df

    conn = _vm(request, p, name)
    with _held(request, name, "guest.df", readonly):
        return GuestDf(**df(conn, name, readonly=readonly))


def _file_response(tmp: str, path: str, media: str, filename: str) -> FileResponse:
    return FileResponse(path, media_type=media, filename=filename,
                        background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))


@router.get("/guest/cat", responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}},
            response_class=FileResponse)
def guest_cat(name: str, request: Request, path: str = Query(..., description="guest file"),
              readonly: bool = READONLY, p: Principal = Depends(require("operator"))) -> FileResponse:
    """A guest file's bytes."""
    from kvmkit.service.guests.offline import cat

    conn = _vm(request, p, name)
    tmp = tempfile.mkdtemp(prefix="kvmkit-guest-")
    try:
        with _held(request, name, "guest.cat", readonly):
            res = cat(conn, name, path, os.path.join(tmp, "file"), readonly=readonly)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _audit(request, p, "guest.cat", name, f"{res['path']} ({res['size']} bytes)")
    return _file_response(tmp, os.path.join(tmp, "file"), "application/octet-stream",
                          os.path.basename(res["path"]) or "file")


@router.get("/guest/copy-out", responses={**ERRORS, 200: {"content": {"application/octet-stream": {},
                                                                          "application/x-tar": {}}}},
            response_class=FileResponse)
def guest_copy_out(name: str, request: Request, path: str = Query(..., description="guest file or directory"),
                   readonly: bool = READONLY, p: Principal = Depends(require("operator"))) -> FileResponse:
    """A guest file as it is, or a guest directory as a tar archive."""
    from kvmkit.service.guests.offline import cat, tar_out

    conn = _vm(request, p, name)
    tmp = tempfile.mkdtemp(prefix="kvmkit-guest-")
    out = os.path.join(tmp, "out")
    try:
        with _held(request, name, "guest.copy-out", readonly):
            try:  # a file as it is; "is a directory": the directory as tar (one more appliance)
                res = cat(conn, name, path, out, readonly=readonly)
                media, fname = "application/octet-stream", os.path.basename(res["path"]) or "file"
            except InvalidInput as err:
                if "directory" not in err.message.lower():
                    raise
                res = tar_out(conn, name, path, out, readonly=readonly)
                media, fname = "application/x-tar", (os.path.basename(res["path"]) or "root") + ".tar"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _audit(request, p, "guest.copy-out", name, f"{res['path']} ({res['size']} bytes)")
    return _file_response(tmp, out, media, fname)


@router.post("/guest/copy-in", responses=ERRORS)
async def guest_copy_in(name: str, request: Request, path: str = Query(..., description="the guest file to write"),
                        p: Principal = Depends(require("operator"))) -> CopiedIn:
    """Write the request body as the guest file ``path`` (its directory must exist) of a shut-off VM."""
    from starlette.concurrency import run_in_threadpool

    from kvmkit.service.guests.offline import upload

    check_vm_visible(p, name)
    tmp = tempfile.mkdtemp(prefix="kvmkit-guest-")
    src = os.path.join(tmp, "upload")
    try:
        size = 0
        with open(src, "wb") as fh:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD:
                    raise InvalidInput(f"the upload is larger than {MAX_UPLOAD} bytes",
                                       hint="copy large data with `kvmkit guest copy-in` on the host")
                fh.write(chunk)

        def work() -> dict[str, Any]:
            conn = state(request).hv.get()
            with _held(request, name, "guest.copy-in", False):
                return upload(conn, name, src, path)

        res = await run_in_threadpool(work)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    request.state.audit_detail = f"{res['path']} ({res['size']} bytes)"
    return CopiedIn(**res)
