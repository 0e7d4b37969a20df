"""/api/v1/pools/{pool}/volumes: storage volumes, thin over kvmkit.service.storage.volumes and .streams (the
code of ``kvmkit volume``), with the image upload and download streamed.

Roles (docs/api.md, "Storage roles"): viewers list and read volumes; operators create, clone, upload and
download them, and resize, wipe and delete the volumes they created through the API (the creator is
remembered in service/storage/volume_marks.py); admins resize, wipe and delete any volume. Delegated
users (``vm_scope: granted``) reach no storage route.

``PUT .../{name}/content`` streams the request body into the volume (``?format=`` for a new volume,
``?sha256=`` to have it checked) and answers when the upload ended: 201 (volume made) or 200 (volume
overwritten) with the finished ``volume.upload`` task, whose result has the sha256 of the stored bytes.
``GET .../{name}/content`` streams the volume out (Content-Length, ``X-Kvmkit-Task``); the
``volume.download`` task's result has the sha256 of what was sent once the body is complete.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from kvmkit.api.deps import require, require_unrestricted, state
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, start, submit
from kvmkit.api.models.storage import (
    UploadFailed,
    UploadTask,
    VolumeDeleted,
    VolumeInfo,
    VolumeResized,
    VolumeRow,
)
from kvmkit.errors import InvalidInput, KvmkitError
from kvmkit.service.access.auth import Forbidden, Principal
from kvmkit.spec.storage import CloneSpec, ResizeSpec, VolumeFormat, VolumeSpec

router = APIRouter(prefix="/pools/{pool}/volumes", tags=["volumes"])
_404: dict[int | str, dict[str, Any]] = {404: {"description": "no such pool or volume"}}
_TASK = dict(TASK_RESPONSES)  # 202: the Task model, with Location
SHA256 = r"^[0-9a-fA-F]{64}$"
CONTENT_PATH = "/pools/{pool}/volumes/{name}/content"  # PUT: streamed body, exempt from the body size cap


class LengthRequired(InvalidInput):
    code = "length_required"
    http_status = 411


def _conn(request: Request) -> Any:
    return state(request).hv.get()


def _target(pool: str, name: str) -> str:
    return f"volume:{pool}/{name}"


def _with_owner(d: dict[str, Any]) -> VolumeInfo:
    from kvmkit.service.storage import volume_marks

    return VolumeInfo.model_validate({**d, "owner": volume_marks.marks(d["path"]).get("owner")})


def _own(p: Principal, path: str) -> None:
    from kvmkit.service.storage import volume_marks

    volume_marks.set_mark(path, owner=p.name)


def may_change(p: Principal, conn: Any, pool: str, name: str, what: str) -> None:
    """Admins change any volume; operators only the ones they created through the API."""
    from kvmkit.service.storage import volume_marks
    from kvmkit.service.storage.volumes import get_pool, get_volume

    path = get_volume(get_pool(conn, pool), name).path()  # 404 first
    if p.at_least("admin"):
        return
    owner = volume_marks.marks(path).get("owner")
    if owner != p.name:
        who = f"user '{owner}'" if owner else "no API user (it was made outside the API)"
        raise Forbidden(f"volume '{name}' in pool '{pool}' was created by {who}; user '{p.name}' (role {p.role}) "
                        f"may {what} only the volumes it created", hint="ask an admin to do it")


@router.get("", responses=_404)
def list_volumes(pool: str, request: Request, p: Principal = Depends(require("viewer"))) -> list[VolumeRow]:
    """``kvmkit volume list POOL``."""
    from kvmkit.service.storage.volumes import list_volumes as do_list

    require_unrestricted(p, "list volumes")
    return [VolumeRow.model_validate(d) for d in do_list(_conn(request), pool)]


@router.post("", status_code=201, responses={**_404, 409: {"description": "exists already or busy"}})
def create_volume(pool: str, body: VolumeSpec, request: Request,
                  p: Principal = Depends(require("operator"))) -> VolumeInfo:
    """``kvmkit volume create POOL NAME --size S [--format F] [--preallocation full] [--backing VOL]``."""
    from kvmkit.service.storage.volumes import create_volume as do_create

    require_unrestricted(p, "create volumes")
    st = state(request)
    with st.runner.hold(_target(pool, body.name), "volume.create"):
        d = do_create(st.hv.get(), pool, body.name, body.size, fmt=body.format,
                      preallocation=body.preallocation, backing=body.backing)
        _own(p, d["path"])
    return _with_owner(d)


@router.get("/{name}", responses=_404)
def show_volume(pool: str, name: str, request: Request, p: Principal = Depends(require("viewer"))) -> VolumeInfo:
    """``kvmkit volume info POOL NAME``: capacity, allocation, format, backing chain (and owner, incomplete)."""
    from kvmkit.service.storage.volumes import volume_info

    require_unrestricted(p, "read volumes")
    return _with_owner(volume_info(_conn(request), pool, name))


@router.delete("/{name}", responses={**_404, 403: {"description": "not yours (operators)"},
                                     409: {"description": "in use by a VM, a template or a linked clone"}})
def delete_volume(pool: str, name: str, request: Request, p: Principal = Depends(require("operator"))) -> VolumeDeleted:
    """``kvmkit volume delete POOL NAME``."""
    from kvmkit.service.storage.volumes import delete_volume as do_delete

    require_unrestricted(p, "delete volumes")
    st = state(request)
    conn = st.hv.get()
    may_change(p, conn, pool, name, "delete")
    with st.runner.hold(_target(pool, name), "volume.delete"):
        return VolumeDeleted.model_validate(do_delete(conn, pool, name))


@router.patch("/{name}", responses={**_404, 403: {"description": "not yours (operators)"},
                                    409: {"description": "busy, or a disk of a running VM"}})
def resize_volume(pool: str, name: str, body: ResizeSpec, request: Request,
                  p: Principal = Depends(require("operator"))) -> VolumeResized:
    """``kvmkit volume resize POOL NAME SIZE [--allow-shrink]``."""
    from kvmkit.service.storage.volumes import resize_volume as do_resize

    require_unrestricted(p, "resize volumes")
    st = state(request)
    conn = st.hv.get()
    may_change(p, conn, pool, name, "resize")
    with st.runner.hold(_target(pool, name), "volume.resize"):
        return VolumeResized.model_validate(do_resize(conn, pool, name, body.capacity,
                                                      allow_shrink=body.allow_shrink))


@router.post("/{name}/actions/wipe", status_code=202, responses={**_TASK, 403: {"description": "not yours"}})
def wipe_volume(pool: str, name: str, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """``kvmkit volume wipe POOL NAME`` as a task (``volume.wipe``)."""
    from kvmkit.service.storage.volumes import wipe_volume as do_wipe

    require_unrestricted(p, "wipe volumes")
    st = state(request)
    target = _target(pool, name)
    not_busy(st, target)
    may_change(p, st.hv.get(), pool, name, "wipe")
    from kvmkit.service.storage.volumes import get_pool, get_volume, refuse_if_base

    base = get_pool(st.hv.get(), pool)
    refuse_if_base(base, get_volume(base, name), "wipe")  # 409 now (the task checks again)

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection

        ctx.step("wipe", 10, f"wiping {pool}/{name}", pool=pool, volume=name)
        return do_wipe(worker_connection(st.hv.get()), pool, name)

    return submit(request, st, p, "volume.wipe", target, run, {"pool": pool, "volume": name})


@router.post("/{name}/clone", status_code=202, responses={**_TASK, 409: {"description": "busy, exists, in use"}})
def clone_volume(pool: str, name: str, body: CloneSpec, request: Request,
                 p: Principal = Depends(require("operator"))) -> JSONResponse:
    """``kvmkit volume clone POOL SRC NEW [--linked]`` as a task (``volume.clone``, holding the source): a
    copy (percent from the copy's growing size) or a linked clone (a qcow2 overlay, at once)."""
    from kvmkit.service.storage.volumes import clone_volume as do_clone
    from kvmkit.service.storage.volumes import get_pool, get_volume

    require_unrestricted(p, "clone volumes")
    st = state(request)
    target = _target(pool, name)
    not_busy(st, target)
    dest_pool = body.pool or pool
    not_busy(st, _target(dest_pool, body.name))
    src = get_volume(get_pool(st.hv.get(), pool), name)  # 404 now rather than a failed task
    total = int(src.info()[2]) or 1

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection

        conn = worker_connection(st.hv.get())
        ctx.step("clone", 5, f"{'linking' if body.linked else 'copying'} {pool}/{name} to {dest_pool}/{body.name}",
                 source=name, pool=pool, new=body.name, dest_pool=dest_pool, linked=body.linked)
        watch = None if body.linked else _watch_copy(ctx, conn, dest_pool, body.name, total)
        try:
            d = do_clone(conn, pool, name, body.name, linked=body.linked, target_pool=body.pool)
        finally:
            if watch is not None:
                watch.set()
        _own(p, d["path"])
        return d

    return submit(request, st, p, "volume.clone", target, run,
                  {"pool": pool, "volume": name, "new": body.name, "dest_pool": dest_pool, "linked": body.linked})


def _watch_copy(ctx: Any, conn: Any, pool: str, new: str, total: int) -> threading.Event | None:
    """Percent of a full copy from the size of the file being written (a directory pool on this host); the
    copy itself is one libvirt call (virStorageVolCreateXMLFrom) that reports nothing while it runs."""
    from lxml import etree

    from kvmkit.service.storage.volumes import get_pool

    root = etree.fromstring(get_pool(conn, pool).XMLDesc(0))
    base = root.findtext("target/path")
    if root.get("type") not in ("dir", "fs", "netfs") or not base:
        return None
    path = os.path.join(base, new)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            try:
                written = os.stat(path).st_blocks * 512
            except OSError:
                continue
            pct = 5 + 90 * min(written, total) / total
            try:
                ctx.progress(pct, f"copied {written / 1024**2:.0f} of {total / 1024**2:.0f} MiB")
            except Exception:  # progress is best effort
                return

    threading.Thread(target=watch, name="kvmkit-clone-watch", daemon=True).start()
    return stop


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is not None:
        if not raw.isdigit():
            raise InvalidInput(f"Content-Length {raw[:40]!r} is not a number of bytes",
                               hint="send the image's size in bytes")
        return int(raw)
    if "chunked" in request.headers.get("transfer-encoding", "").lower():
        return None
    raise LengthRequired("an upload needs Content-Length or chunked transfer encoding",
                         hint="send the image as the request body (curl -T FILE, or --data-binary @FILE)")


_UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": UploadTask, "description": "an existing volume was overwritten; the finished task"},
    201: {"model": UploadTask, "description": "the upload made the volume; the finished task"},
    **{code: {"model": UploadFailed, "description": text} for code, text in (
        (400, "cut off (fewer bytes than Content-Length)"), (403, "a viewer or delegated user"),
        (404, "no such pool"), (409, "busy, in use by a VM, or cancelled"),
        (411, "neither Content-Length nor chunked"), (413, "larger than the volume or the pool's free space"),
        (422, "bad format, hostile image (backing or data file), wrong sha256"))},
}


@router.put("/{name}/content", status_code=201, responses=_UPLOAD_RESPONSES,
            openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}})
async def upload_content(pool: str, name: str, request: Request,
                         fmt: VolumeFormat | None = Query(None, alias="format",
                                                          description="the image's format (needed for a new volume)"),
                         sha256: str | None = Query(None, description="refuse unless the bytes have this sha256 "
                                                    "(64 hex digits)"),
                         p: Principal = Depends(require("operator"))) -> JSONResponse:
    """``kvmkit volume upload POOL NAME FILE [--format F]``: the request body (Content-Length or chunked) is
    streamed into the volume, which is created when missing. The answer comes when the upload ended."""
    from starlette.concurrency import run_in_threadpool

    from kvmkit.api.jobs.storage import RequestBody, Throttled, final_task
    from kvmkit.service.storage import streams

    require_unrestricted(p, "upload volumes")
    if sha256 is not None and not re.match(SHA256, sha256):
        raise InvalidInput(f"sha256 {sha256[:80]!r} is not a sha256 digest",
                           hint="give 64 hexadecimal digits (sha256sum FILE), or leave sha256 out")
    length = _content_length(request)
    st = state(request)
    target = _target(pool, name)
    not_busy(st, target)
    # refused before the body is read: a client sending Expect: 100-continue never sends it
    plan = await run_in_threadpool(streams.plan_upload, st.hv.get(), pool, name, fmt=fmt, length=length,
                                   what="the upload")
    if plan.vol is not None:  # overwriting a volume is as destructive as wiping it
        await run_in_threadpool(may_change, p, st.hv.get(), pool, name, "overwrite")
    body = RequestBody(request, length)
    failure: dict[str, BaseException] = {}

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection

        try:
            conn = worker_connection(st.hv.get())
            ctx.step("upload", 0, f"receiving {pool}/{name}", pool=pool, volume=name, length=length, format=fmt,
                     existed=plan.vol is not None)  # what recovery undoes after a crash (jobs/storage.py)
            d = streams.upload_chunks(conn, pool, name, body.chunks(), fmt=fmt, length=length, expected_sha256=sha256,
                                      progress=Throttled(ctx, "received"), what="the upload")
            if d["created"]:
                _own(p, d["path"])
            from kvmkit.service.storage import volume_marks

            return {**d, "owner": volume_marks.marks(d["path"]).get("owner")}
        except BaseException as err:
            failure["error"] = err
            raise
        finally:
            body.stop()

    task = start(request, st, p, "volume.upload", target, run,
                 {"pool": pool, "volume": name, "length": length, "format": fmt}, own_thread=True)
    await body.pump()
    final = await final_task(st.runner, task["id"], body.channel.closed)
    if final["state"] == "succeeded":
        return JSONResponse(final, status_code=201 if final["result"]["created"] else 200)
    err = failure.get("error")
    if isinstance(err, KvmkitError):
        status, answer = err.http_status, err.to_dict()
    else:
        status, answer = 500, {"error": final["error"] or "upload failed", "hint": "see the server log",
                               "code": "internal"}
    return JSONResponse({**answer, "task_id": final["id"], "task": final}, status_code=status)


@router.get("/{name}/content", response_class=StreamingResponse, responses={
    **_404, 409: {"description": "busy"},
    200: {"description": "the volume's bytes; the volume.download task (X-Kvmkit-Task) has their sha256 "
                         "once the body is complete",
          "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
          "headers": {"X-Kvmkit-Task": {"description": "the download task's id", "schema": {"type": "string"}},
                      "X-Kvmkit-Format": {"description": "qcow2 or raw", "schema": {"type": "string"}}}}})
async def download_content(pool: str, name: str, request: Request,
                           p: Principal = Depends(require("operator"))) -> StreamingResponse:
    """``kvmkit volume download POOL NAME FILE``: the volume's stored bytes, streamed (Content-Length set)."""
    from starlette.concurrency import run_in_threadpool

    from kvmkit.api.jobs.storage import Channel, Throttled, response_body
    from kvmkit.service.storage.streams import VolumeReader

    require_unrestricted(p, "download volumes")
    st = state(request)
    target = _target(pool, name)
    not_busy(st, target)
    probe = await run_in_threadpool(VolumeReader, st.hv.get(), pool, name)
    length, fmt = probe.length, probe.format
    channel = Channel()

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.api.jobs.storage import _EOF
        from kvmkit.hypervisor.connection import worker_connection

        what = f"the download of {pool}/{name}"
        try:
            reader = VolumeReader(worker_connection(st.hv.get()), pool, name, progress=Throttled(ctx, "sent"))
            ctx.step("download", 0, f"sending {pool}/{name}", pool=pool, volume=name, length=reader.length)
            if reader.length != length:
                raise InvalidInput(f"volume '{name}' changed size since the request began",
                                   hint="download it again")
            for chunk in reader:
                channel.put_from_thread(chunk, what)
            channel.put_from_thread(_EOF, what)
            return reader.result()
        except BaseException as err:
            channel.fail_from_thread(err)  # the response ends short of Content-Length: the client sees it
            raise

    task = start(request, st, p, "volume.download", target, run, {"pool": pool, "volume": name, "length": length},
                 own_thread=True)
    headers = {"Content-Length": str(length), "X-Kvmkit-Task": task["id"], "X-Kvmkit-Format": fmt,
               "Content-Disposition": f'attachment; filename="{name}"'}
    return StreamingResponse(response_body(channel), media_type="application/octet-stream", headers=headers)
