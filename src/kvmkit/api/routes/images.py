"""/api/v1/images: image info, convert and the guest image builders (the code of ``kvmkit image``).

An image is a pool volume (``{"pool", "volume"}``) or, for admins only, a file on the host
(``{"path"}``): qemu-img runs as root on the server, so a host path would let anyone read or write any
file. The format is always explicit: a pool volume's own, the one given, or read from the header by kvmkit
(QEMU never probes). Convert and build are tasks with percent and message, cancellable: a cancelled or
failed convert leaves no destination file; the builds stop between their stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from kvmkit.api.deps import check_vm_visible, require, require_unrestricted, state
from kvmkit.api.jobs.storage import percent_progress
from kvmkit.api.jobs.submit import TASK_RESPONSES, not_busy, submit
from kvmkit.api.models.storage import ImageInfo
from kvmkit.errors import InvalidInput
from kvmkit.service.access.auth import Forbidden, Principal
from kvmkit.spec.storage import BuildSpec, ConvertSpec, ImageRef, ReadFormat

router = APIRouter(prefix="/images", tags=["images"])
_TASK = {**TASK_RESPONSES,
         403: {"description": "a host path (admins only), or a viewer"}}


def _host_path_allowed(p: Principal, what: str) -> None:
    if not p.at_least("admin"):
        raise Forbidden(f"user '{p.name}' (role {p.role}) may not use host paths ({what})",
                        hint="name a pool volume ({\"pool\", \"volume\"}) instead, or ask an admin")


def _source(conn: Any, ref: ImageRef, fmt: str | None) -> tuple[str, str]:
    """(path, format) of an image to read; the format is never left to QEMU."""
    from kvmkit.images import qemu_img
    from kvmkit.service.storage.volumes import get_pool, get_volume, volume_format

    if ref.path is not None:
        return ref.path, fmt or qemu_img.probe_format(ref.path)
    assert ref.pool is not None and ref.volume is not None
    vol = get_volume(get_pool(conn, ref.pool), ref.volume)
    return vol.path(), fmt or volume_format(vol)


def _dest(conn: Any, ref: ImageRef) -> str:
    """The path of a new image: a host path as given, or a new volume's file in a directory pool."""
    from lxml import etree

    from kvmkit.service.storage.volumes import _check_new_name, get_pool

    if ref.path is not None:
        return ref.path
    assert ref.pool is not None and ref.volume is not None
    pool = get_pool(conn, ref.pool)
    root = etree.fromstring(pool.XMLDesc(0))
    if root.get("type") not in ("dir", "fs", "netfs") or not root.findtext("target/path"):
        raise InvalidInput(f"pool '{ref.pool}' is a {root.get('type')} pool; convert writes into directory pools",
                           hint="convert into a dir, fs or netfs pool, then copy with volume clone")
    _check_new_name(pool, ref.volume)
    return str(Path(root.findtext("target/path") or "").resolve() / ref.volume)


def _ref_text(ref: ImageRef) -> str:
    return ref.path if ref.path is not None else f"{ref.pool}/{ref.volume}"


@router.get("/info", responses={403: {"description": "a host path (admins only)"},
                                404: {"description": "no such pool, volume or file"}})
def image_info(request: Request, pool: str | None = Query(None), volume: str | None = Query(None),
               path: str | None = Query(None, description="a host path (admins only)"),
               fmt: ReadFormat | None = Query(None, alias="format", description="default: the volume's own, or "
                                              "read from the header by kvmkit"),
               p: Principal = Depends(require("viewer"))) -> ImageInfo:
    """``kvmkit image info FILE [--format F]``: format, virtual and actual size, backing chain."""
    from kvmkit.images import qemu_img

    require_unrestricted(p, "read images")
    try:
        ref = ImageRef(pool=pool, volume=volume, path=path)
    except ValueError as err:
        raise InvalidInput(f"image: {err}".replace("Value error, ", "").split("\n")[0],
                           hint="query ?pool=P&volume=V or (admins) ?path=/abs/file") from None
    if ref.path is not None:
        _host_path_allowed(p, "path")
    src, f = _source(state(request).hv.get(), ref, fmt)
    return ImageInfo.model_validate(qemu_img.summary(qemu_img.info(src, f, chain=True)))


@router.post("/convert", status_code=202, responses=_TASK)
def convert(body: ConvertSpec, request: Request, p: Principal = Depends(require("operator"))) -> JSONResponse:
    """``kvmkit image convert SRC DST --format F [--src-format F] [--vm NAME]`` as a task (``image.convert``)
    holding the destination. A destination volume is owned by the caller."""
    require_unrestricted(p, "convert images")
    for field, ref in (("source", body.source), ("dest", body.dest)):
        if ref.path is not None:
            _host_path_allowed(p, f"{field}.path")
    if body.vm:
        check_vm_visible(p, body.vm)
    st = state(request)
    target = f"volume:{body.dest.pool}/{body.dest.volume}" if body.dest.path is None else f"file:{body.dest.path}"
    not_busy(st, target)
    if body.source.path is None:  # an upload or wipe into the source meanwhile would tear the copy
        not_busy(st, f"volume:{body.source.pool}/{body.source.volume}")
    conn = st.hv.get()
    src, src_fmt = _source(conn, body.source, body.source_format)
    dst = _dest(conn, body.dest)
    if Path(dst).exists():
        raise InvalidInput(f"{dst} exists already", hint="choose a new name or delete it first")

    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.images import qemu_img
        from kvmkit.service.storage import volume_marks
        from kvmkit.service.storage.disk_convert import convert_vm_disk
        from kvmkit.service.storage.volumes import get_pool, volume_info

        c = worker_connection(st.hv.get())
        ctx.step("convert", 1, f"converting {_ref_text(body.source)} to {body.format}", src=src, dst=dst,
                 src_format=src_fmt, format=body.format, vm=body.vm)
        progress = percent_progress(ctx, f"convert to {body.format}", 1, 95)
        if body.vm:
            result = convert_vm_disk(c, body.vm, src, dst, body.format, progress=progress)
        else:
            qemu_img.convert(src, dst, src_fmt, body.format, progress=progress)
            result = {"old": src, "new": dst, "old_format": src_fmt, "format": body.format}
        if body.dest.pool is not None and body.dest.volume is not None:
            ctx.step("refresh", 97, f"refreshing pool {body.dest.pool}")
            get_pool(c, body.dest.pool).refresh(0)
            volume_marks.set_mark(dst, owner=p.name)
            result["volume"] = volume_info(c, body.dest.pool, body.dest.volume)
        return result

    return submit(request, st, p, "image.convert", target, run, body.model_dump())


@router.post("/build", status_code=202, responses=_TASK)
def build(body: BuildSpec, request: Request, p: Principal = Depends(require("admin"))) -> JSONResponse:
    """``kvmkit image build micro|debian-12 [--force] [--kernel minimal]`` as a task (``image.build``):
    built into kvmkit's cache, redone only when their inputs change (a cached micro build answers in
    seconds); cancelling stops the build between its stages. The result names the files: import a disk
    image into a pool with POST /images/convert (admins may name host paths)."""
    st = state(request)
    target = f"image:{body.name}"
    not_busy(st, target)

    def run(ctx: Any) -> dict[str, Any]:
        if body.name == "micro":
            return _build_micro(ctx, body)
        from kvmkit.images import debian

        ctx.step("build", 1, "building debian-12 (cached when its inputs are unchanged)", force=body.force)
        return debian.build(None, force=body.force,
                            progress=lambda stage: ctx.step(stage[:64], None, stage[:200]))

    return submit(request, st, p, "image.build", target, run, body.model_dump())


def _build_micro(ctx: Any, body: BuildSpec) -> dict[str, Any]:
    from kvmkit.images import micro

    kernel = None
    if body.kernel == "minimal":
        from kvmkit.images import minimal_kernel

        ctx.step("kernel", 1, "building the minimal kernel (cached when its inputs are unchanged)")

        def say(stage: str, pct: float) -> None:
            ctx.check_cancel()
            ctx.progress(min(90.0, pct * 0.9), f"minimal kernel: {stage}"[:200])

        kernel = minimal_kernel.kernel_tree(minimal_kernel.build(force=body.force, progress=say))
    else:
        ctx.step("kernel", 10, "Debian's cloud kernel (cached unless force)")
    ctx.step("initramfs", 92, "busybox initramfs (cached when its inputs are unchanged)", force=body.force)
    return dict(micro.build(None, force=body.force, kernel=kernel).to_dict())
