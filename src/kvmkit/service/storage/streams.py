"""Upload a file into a volume and download a volume into a file through libvirt's stream API.

Works on remote hosts too (the bytes travel over the libvirt connection). An uploaded image is first
inspected with ``qemu-img info`` (backing chain cut) and refused if it names a backing file or external
data file or is not in the declared format. A new volume made for an upload is deleted again when the
upload fails; a download goes to ``FILE.part`` and is renamed only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import libvirt

from kvmkit.errors import Conflict, InvalidInput, KvmkitError, NotFound, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.storage.volumes import (
    _check_new_name,
    _check_space,
    _pool_target,
    _vol_xml,
    check_format,
    get_pool,
    get_volume,
    volume_format,
    volume_info,
    volume_users,
)

CHUNK = 1024 * 1024


def _open_source(path: Path) -> int:
    if not path.is_file():
        raise NotFound(f"file {path} does not exist", hint="check the path")
    return path.stat().st_size


def upload(conn: libvirt.virConnect, pool_name: str, name: str, file: str | Path, *, fmt: str | None = None,
           progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Upload ``file`` into volume ``name`` (created to fit when it does not exist; ``fmt`` then required)."""
    from kvmkit.images import qemu_img

    src = Path(file).resolve()
    size = _open_source(src)
    pool = get_pool(conn, pool_name)
    created = False
    try:
        vol = get_volume(pool, name)
    except NotFound:
        vol = None
    if vol is not None:
        declared = volume_format(vol)
        if fmt and fmt != declared:
            raise InvalidInput(f"volume '{name}' is {declared}, not {fmt}", hint=f"upload a {declared} image")
        users = volume_users(conn, pool_name, vol)
        if users:
            raise Conflict(f"volume '{name}' is in use by VM {', '.join(users)}", hint="shut down and detach first")
    else:
        if not fmt:
            raise InvalidInput(f"volume '{name}' does not exist; say which format the file is",
                               hint="pass --format qcow2 or --format raw")
        declared = check_format(fmt)
    data = qemu_img.inspect_untrusted(src, declared)
    virtual = int(data.get("virtual-size") or size)
    if vol is not None:
        capacity = vol.info()[1]
        if virtual > capacity or (declared == "raw" and size > capacity):
            raise InvalidInput(f"{src.name} ({virtual} bytes) is larger than volume '{name}' ({capacity} bytes)",
                               hint=f"grow the volume first: kvmkit volume resize {pool_name} {name} SIZE")
    else:
        _check_new_name(pool, name)
        _check_space(pool, size, f"upload of {src.name}")
        ptype, _ = _pool_target(pool)
        with libvirt_errors(f"create volume {name}"):
            vol = pool.createXML(_vol_xml(name, virtual, declared, allocation=0, pool_type=ptype), 0)
        created = True
    try:
        _send(conn, vol, src, size, progress)
    except BaseException as err:
        if created:
            try:
                vol.delete(0)
            except libvirt.libvirtError:
                pass
        if isinstance(err, KvmkitError) and "No space left on device" in err.message:
            raise OperationFailed(f"upload of {src.name} stopped: pool '{pool_name}' is full ({err.message})"
                                  + ("; the new volume was removed" if created else ""),
                                  hint=f"free space in pool '{pool_name}' or upload into another pool") from err
        raise
    with libvirt_errors(f"refresh pool {pool_name}"):
        pool.refresh(0)
    return {**volume_info(conn, pool_name, name), "uploaded_bytes": size, "created": created}


def _send(conn: libvirt.virConnect, vol: libvirt.virStorageVol, src: Path, size: int,
          progress: Callable[[int, int], None] | None) -> None:
    stream = conn.newStream(0)
    done = 0

    def reader(_stream: libvirt.virStream, nbytes: int, fh: BinaryIO) -> bytes:
        nonlocal done
        chunk = fh.read(min(nbytes, CHUNK))
        done += len(chunk)
        if progress:
            progress(done, size)
        return chunk

    try:
        with src.open("rb") as fh, libvirt_errors(f"upload {src.name}"):
            vol.upload(stream, 0, size, 0)
            stream.sendAll(reader, fh)
            stream.finish()
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise
    if done != size:
        raise OperationFailed(f"upload of {src.name} stopped after {done} of {size} bytes")


def download(conn: libvirt.virConnect, pool_name: str, name: str, file: str | Path, *,
             progress: Callable[[int, int], None] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Download volume ``name`` into ``file`` (written as FILE.part, renamed when complete)."""
    pool = get_pool(conn, pool_name)
    vol = get_volume(pool, name)
    dest = Path(file).resolve()
    if dest.exists() and not overwrite:
        raise InvalidInput(f"{dest} exists already", hint="choose another file name or delete it first")
    if not dest.parent.is_dir():
        raise NotFound(f"directory {dest.parent} does not exist", hint="create it first")
    total = vol.info()[2] or vol.info()[1]
    part = dest.with_name(dest.name + ".part")
    stream = conn.newStream(0)
    done = 0

    def writer(_stream: libvirt.virStream, data: bytes, fh: BinaryIO) -> int:
        nonlocal done
        written = fh.write(data)
        done += len(data)
        if progress:
            progress(done, max(total, done))
        return written

    try:
        with part.open("wb") as fh:
            with libvirt_errors(f"download volume {name}"):
                vol.download(stream, 0, 0, 0)
                stream.recvAll(writer, fh)
                stream.finish()
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, dest)
    except BaseException:
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        part.unlink(missing_ok=True)
        raise
    return {"pool": pool_name, "name": name, "file": str(dest), "bytes": done, "format": volume_format(vol)}
