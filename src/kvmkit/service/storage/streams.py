"""Upload an image into a volume and download a volume through libvirt's stream API.

Works on remote hosts too (the bytes travel over the libvirt connection). One implementation serves both
front ends: :func:`upload_chunks` takes the image as an iterator of byte chunks (the CLI reads a file, the
API hands over the request body as it arrives) and :class:`VolumeReader` hands a volume out as an
iterator of chunks (the CLI writes a file, the API a response body); neither ever holds more than about
one chunk (:data:`CHUNK`) of the image in memory, and both compute the sha256 of what passed.

Before any byte is written the upload is checked (:func:`plan_upload`: the volume's format, its users,
the declared length against its capacity or the pool's free space) and so is the image's head
(:func:`kvmkit.images.image_head.inspect_head`: the declared format, no backing file, no external data
file); a local file is inspected by ``qemu-img`` first as well (:func:`upload`), and the stored file again
afterwards. A volume made for an upload is deleted again when the upload fails (cut off, cancelled, too
large, wrong sha256); an existing volume that was partly overwritten is marked ``incomplete``
(service/storage/volume_marks.py) until a complete upload or a wipe. A download to a file goes to
``FILE.part`` and is renamed only when complete.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import libvirt

from kvmkit.errors import Conflict, InvalidInput, KvmkitError, NotFound, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.storage import volume_marks
from kvmkit.service.storage.volumes import (
    _check_new_name,
    _human,
    _pool_target,
    _vol_xml,
    check_format,
    get_pool,
    get_volume,
    refuse_if_base,
    volume_format,
    volume_info,
    volume_users,
)

CHUNK = 1024 * 1024        # bytes handed on at a time between threads (API) and per downloaded chunk
SEGMENT = 8 * 1024 * 1024  # bytes asked of libvirt per download request (bounds what libvirt queues)
SEND = 256 * 1024          # bytes per libvirt stream message: what libvirtd takes cheapest (1 MiB costs it
                           # ~1.5x the CPU, 64 KiB ~1.6x; measured on libvirt 9.0), about what virsh sends
FILE_POOLS = ("dir", "fs", "netfs")
Progress = Callable[[int, int | None], None]  # (bytes so far, total or None)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class TooLarge(InvalidInput):
    """More bytes than the volume (or the pool) can take."""

    code = "too_large"
    http_status = 413


class Truncated(InvalidInput):
    """The image ended (or the sender went away) before the announced length."""

    code = "truncated"
    http_status = 400


class DigestMismatch(InvalidInput):
    code = "sha256_mismatch"
    http_status = 422


def _open_source(path: Path) -> int:
    if not path.is_file():
        raise NotFound(f"file {path} does not exist", hint="check the path")
    return path.stat().st_size


@dataclass
class UploadPlan:
    """What an upload will do, decided before any byte is read: into which volume (None: a new one), the
    image's format, and the most bytes it may send."""

    pool: libvirt.virStoragePool
    name: str
    vol: libvirt.virStorageVol | None
    declared: str
    capacity: int | None  # of the existing volume
    limit: int
    pool_type: str


def _physical(vol: libvirt.virStorageVol) -> int:
    """The volume's size in bytes as stored (a file's length; a block device's size): what a download sends."""
    with libvirt_errors(f"volume {vol.name()}"):
        return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])


def _available(pool: libvirt.virStoragePool) -> int:
    with libvirt_errors(f"refresh pool {pool.name()}"):
        pool.refresh(0)
        return int(pool.info()[3])


def plan_upload(conn: libvirt.virConnect, pool_name: str, name: str, *, fmt: str | None = None,
                length: int | None = None, what: str = "the upload") -> UploadPlan:
    """The checks an upload passes before anything is read or written (``length``: the image's size in
    bytes when known in advance)."""
    pool = get_pool(conn, pool_name)
    ptype, _ = _pool_target(pool)
    try:
        vol = get_volume(pool, name)
    except NotFound:
        vol = None
    if length is not None and length < 0:
        raise InvalidInput(f"{what}: the length {length} is negative", hint="send the image's size in bytes")
    if vol is not None:
        declared = volume_format(vol)
        if fmt and fmt != declared:
            raise InvalidInput(f"volume '{name}' is {declared}, not {fmt}", hint=f"upload a {declared} image")
        users = volume_users(conn, pool_name, vol)
        if users:
            raise Conflict(f"volume '{name}' is in use by VM {', '.join(users)}", hint="shut down and detach first")
        refuse_if_base(pool, vol, "upload into")
        with libvirt_errors(f"volume {name}"):
            capacity = int(vol.info()[1])
        if declared == "raw" and length is not None and length > capacity:
            raise TooLarge(f"{what} ({length} bytes) is larger than volume '{name}' ({capacity} bytes)",
                           hint=f"grow the volume first: kvmkit volume resize {pool_name} {name} SIZE")
        # a raw volume takes at most its capacity; a qcow2 file may grow into the pool's free space
        limit = capacity if declared == "raw" or ptype not in FILE_POOLS else _physical(vol) + _available(pool)
        return UploadPlan(pool, name, vol, declared, capacity, limit, ptype)
    if not fmt:
        raise InvalidInput(f"volume '{name}' does not exist; say which format the image is",
                           hint="pass --format qcow2 or --format raw (API: ?format=)")
    declared = check_format(fmt)
    _check_new_name(pool, name)
    available = _available(pool)
    if length is not None and length > available:
        raise TooLarge(f"{what} ({_human(length)}) is more than pool '{pool_name}' has free ({_human(available)})",
                       hint="free space in the pool or upload into another pool")
    if length is None and ptype not in FILE_POOLS:
        raise InvalidInput(f"an upload into a new volume of {ptype} pool '{pool_name}' needs its length in advance",
                           hint="send Content-Length (not chunked), or create the volume first")
    return UploadPlan(pool, name, None, declared, None, available if length is None else length, ptype)


def upload(conn: libvirt.virConnect, pool_name: str, name: str, file: str | Path, *, fmt: str | None = None,
           progress: Progress | None = None) -> dict[str, Any]:
    """Upload ``file`` into volume ``name`` (created to fit when it does not exist; ``fmt`` then required)."""
    from kvmkit.images import qemu_img

    src = Path(file).resolve()
    size = _open_source(src)
    plan = plan_upload(conn, pool_name, name, fmt=fmt, length=size, what=src.name)
    qemu_img.inspect_untrusted(src, plan.declared)  # the whole file is here: let qemu-img look at it first
    with src.open("rb") as fh:
        return _upload(conn, plan, _file_chunks(fh), length=size, progress=progress, what=src.name)


def _file_chunks(fh: BinaryIO) -> Iterator[bytes]:
    while chunk := fh.read(SEND):
        yield chunk


def upload_chunks(conn: libvirt.virConnect, pool_name: str, name: str, chunks: Iterable[bytes], *,
                  fmt: str | None = None, length: int | None = None, expected_sha256: str | None = None,
                  progress: Progress | None = None, what: str = "the upload") -> dict[str, Any]:
    """Upload the image that ``chunks`` yields into volume ``name`` (created when missing; ``fmt`` then
    required). ``length``: the image's size when known in advance (fewer bytes fail as :class:`Truncated`);
    ``expected_sha256``: refuse the upload unless the bytes have this digest. An exception raised by the
    iterator or by ``progress`` (a cancel) stops the upload, cleaned up as any failure."""
    if expected_sha256 is not None and not _SHA256.match(expected_sha256.lower()):
        raise InvalidInput(f"sha256 {expected_sha256[:80]!r} is not a sha256 digest",
                           hint="give 64 hexadecimal digits (sha256sum FILE)")
    plan = plan_upload(conn, pool_name, name, fmt=fmt, length=length, what=what)
    return _upload(conn, plan, chunks, length=length, expected_sha256=expected_sha256, progress=progress, what=what)


def _read_head(it: Iterator[bytes], limit: int) -> bytes:
    """The image's first bytes: enough for inspect_head, or all of it when it is shorter."""
    from kvmkit.images.image_head import HEAD_MAX, bytes_needed

    parts: list[bytes] = []
    have = 0
    head = b""
    while True:
        need = bytes_needed(head)
        if have >= need or need > HEAD_MAX or have > limit:
            return head
        try:
            chunk = next(it)
        except StopIteration:
            return head
        if chunk:
            parts.append(chunk)
            have += len(chunk)
            head = b"".join(parts)


def _upload(conn: libvirt.virConnect, plan: UploadPlan, chunks: Iterable[bytes], *, length: int | None,
            expected_sha256: str | None = None, progress: Progress | None = None,
            what: str = "the upload") -> dict[str, Any]:
    from kvmkit.images.image_head import inspect_head

    it = iter(chunks)
    head = _read_head(it, plan.limit)
    found = inspect_head(head, plan.declared, what)
    pool, name = plan.pool, plan.name
    if plan.vol is not None and plan.capacity is not None and (found.virtual_size or 0) > plan.capacity:
        raise TooLarge(f"{what} is a disk of {found.virtual_size} bytes, larger than volume '{name}' "
                       f"({plan.capacity} bytes)",
                       hint=f"grow the volume first: kvmkit volume resize {pool.name()} {name} SIZE")
    created = plan.vol is None
    if plan.vol is None:
        # A file pool gets an empty file that holds exactly the uploaded bytes (libvirt probes its format
        # and size when the upload completes); a block pool needs the size up front.
        size = 0 if plan.pool_type in FILE_POOLS else int(length or 0)
        fmt = "raw" if plan.pool_type in FILE_POOLS else plan.declared
        with libvirt_errors(f"create volume {name}"):
            vol = pool.createXML(_vol_xml(name, size, fmt, allocation=0, pool_type=plan.pool_type), 0)
    else:
        vol = plan.vol
    path = vol.path()
    state = {"sent": 0}
    try:
        digest, done = _send(conn, vol, head, it, length=length, limit=plan.limit, progress=progress,
                             what=what, state=state)
        if expected_sha256 is not None and digest != expected_sha256.lower():
            raise DigestMismatch(f"{what} has sha256 {digest}, not the expected {expected_sha256.lower()}",
                                 hint="the image was damaged on its way; upload it again")
        _inspect_stored(path, plan.declared, what)
    except BaseException as err:
        if created:
            try:
                vol.delete(0)
            except libvirt.libvirtError:
                pass
        elif state["sent"]:
            volume_marks.set_mark(path, incomplete=f"an upload stopped after {state['sent']} bytes: "
                                                   f"{str(err)[:300] or type(err).__name__}")
        if isinstance(err, KvmkitError) and "No space left on device" in err.message:
            raise OperationFailed(f"upload of {what} stopped: pool '{pool.name()}' is full ({err.message})"
                                  + ("; the new volume was removed" if created else ""),
                                  hint=f"free space in pool '{pool.name()}' or upload into another pool") from err
        raise
    volume_marks.clear(path, "incomplete")
    with libvirt_errors(f"refresh pool {pool.name()}"):
        pool.refresh(0)
    return {**volume_info(conn, pool.name(), name), "uploaded_bytes": done, "created": created, "sha256": digest}


def _inspect_stored(path: str, declared: str, what: str) -> None:
    """qemu-img's look at the stored image (a local file): what the header check missed is refused here."""
    from kvmkit.images import qemu_img

    if Path(path).is_file():
        try:
            qemu_img.inspect_untrusted(path, declared)
        except OperationFailed as err:
            raise InvalidInput(f"{what} is not a valid {declared} image: {err.message}",
                               hint="check it with qemu-img check and upload it again") from err


def _send(conn: libvirt.virConnect, vol: libvirt.virStorageVol, head: bytes, it: Iterator[bytes], *,
          length: int | None, limit: int, progress: Progress | None, what: str,
          state: dict[str, int]) -> tuple[str, int]:
    """Stream ``head`` and the rest of ``it`` into ``vol``; return (sha256 hex, bytes sent)."""
    sha = hashlib.sha256()  # in this thread: a thread of its own cost more CPU than it saved in time
    stream = conn.newStream(0)
    done = 0
    finished = False
    try:
        with libvirt_errors(f"upload into volume {vol.name()}"):
            vol.upload(stream, 0, length or 0, 0)
        chunk = head
        while True:
            if chunk:
                if done + len(chunk) > limit:
                    raise TooLarge(f"{what} passed {limit} bytes, more than volume '{vol.name()}' can take",
                                   hint="grow the volume first or upload a smaller image")
                if length is not None and done + len(chunk) > length:
                    raise InvalidInput(f"{what} sent more than the {length} bytes it announced",
                                       hint="send exactly Content-Length bytes")
                sha.update(chunk)
                pos = 0
                with libvirt_errors(f"upload into volume {vol.name()}"):
                    while pos < len(chunk):  # one libvirt stream message per SEND bytes at most
                        piece = chunk if pos == 0 and len(chunk) <= SEND else chunk[pos:pos + SEND]
                        sent = stream.send(piece)
                        pos += sent
                        state["sent"] += sent
                done += len(chunk)
                if progress:
                    progress(done, length)
            try:
                chunk = next(it)
            except StopIteration:
                break
        if length is not None and done < length:
            raise Truncated(f"{what} stopped after {done} of {length} bytes",
                            hint="send the whole image again")
        with libvirt_errors(f"upload into volume {vol.name()}"):
            stream.finish()
        finished = True
    finally:
        if not finished:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
    return sha.hexdigest(), done


class VolumeReader:
    """A volume's bytes through a libvirt stream (``virStorageVolDownload``) as an iterator of chunks of
    about :data:`CHUNK` bytes; ``length`` is known before the first byte (the volume's stored size) and
    ``sha256`` once the iterator is exhausted. Closing the iterator early aborts the stream."""

    def __init__(self, conn: libvirt.virConnect, pool_name: str, name: str, *,
                 progress: Progress | None = None) -> None:
        self.conn = conn
        self.pool_name, self.name = pool_name, name
        self.vol = get_volume(get_pool(conn, pool_name), name)
        self.format = volume_format(self.vol)
        self.length = _physical(self.vol)
        self.done = 0
        self.complete = False
        self._sha = hashlib.sha256()
        self._progress = progress

    @property
    def sha256(self) -> str:
        """The digest of what was read (of all of it once the iterator is exhausted)."""
        return self._sha.hexdigest()

    def __iter__(self) -> Iterator[bytes]:
        # libvirt has no flow control on a download: once asked, libvirtd sends as fast as it reads and the
        # client library queues what the caller has not taken yet (the server's libvirt event loop reads
        # every connection eagerly). Asking for SEGMENT bytes at a time bounds that queue.
        for offset in range(0, self.length, SEGMENT):
            yield from self._segment(offset, min(SEGMENT, self.length - offset))
        self.complete = True

    def _segment(self, offset: int, size: int) -> Iterator[bytes]:
        stream = self.conn.newStream(0)
        finished = False
        got = 0
        try:
            with libvirt_errors(f"download volume {self.name}"):
                self.vol.download(stream, offset, size, 0)
            parts: list[bytes] = []
            have = 0
            while True:
                with libvirt_errors(f"download volume {self.name}"):
                    data = stream.recv(CHUNK)
                if isinstance(data, int):  # -2: would block (never for a blocking stream)
                    continue
                if data:
                    parts.append(data)
                    have += len(data)
                if parts and (have >= CHUNK or not data):
                    chunk = b"".join(parts)
                    parts, have = [], 0
                    got += len(chunk)
                    if got > size:
                        raise OperationFailed(f"volume '{self.name}' grew while it was read",
                                              hint="download it again when nothing writes to it")
                    self._sha.update(chunk)
                    self.done += len(chunk)
                    if self._progress:
                        self._progress(self.done, self.length)
                    yield chunk
                if not data:
                    break
            with libvirt_errors(f"download volume {self.name}"):
                stream.finish()
            finished = True
        finally:
            if not finished:
                try:
                    stream.abort()
                except libvirt.libvirtError:
                    pass
        if got != size:
            raise OperationFailed(f"volume '{self.name}' gave {offset + got} bytes, not {self.length}",
                                  hint="download it again when nothing writes to it")

    def result(self) -> dict[str, Any]:
        return {"pool": self.pool_name, "name": self.name, "bytes": self.done, "format": self.format,
                "sha256": self.sha256}


def download(conn: libvirt.virConnect, pool_name: str, name: str, file: str | Path, *,
             progress: Progress | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Download volume ``name`` into ``file`` (written as FILE.part, renamed when complete)."""
    reader = VolumeReader(conn, pool_name, name, progress=progress)
    dest = Path(file).resolve()
    if dest.exists() and not overwrite:
        raise InvalidInput(f"{dest} exists already", hint="choose another file name or delete it first")
    if not dest.parent.is_dir():
        raise NotFound(f"directory {dest.parent} does not exist", hint="create it first")
    part = dest.with_name(dest.name + ".part")
    try:
        with part.open("wb") as fh:
            for chunk in reader:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return {**reader.result(), "file": str(dest)}
