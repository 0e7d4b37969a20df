"""Task bodies of the storage routes, and the bridge between an HTTP body and a libvirt stream.

A streamed upload or download is a task (``volume.upload`` / ``volume.download``) that runs in a thread of
its own (``own_thread``: paced by the client, it must not wait for or hold a task worker). The bytes pass
through a :class:`Channel`: a queue of at most ``DEPTH`` chunks of about 1 MiB between the event loop
(which reads the request body from the ASGI receive channel, or writes the response body) and the task
thread (which feeds or drains the libvirt stream through kvmkit.service.storage.streams, the code the CLI
uses). So the server holds a few MiB of an image at any time, whatever its size, and a slow side slows
the other down (TCP back-pressure) instead of filling memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from starlette.requests import ClientDisconnect, Request

from kvmkit.errors import KvmkitError
from kvmkit.service.storage.streams import CHUNK, SEND, Truncated
from kvmkit.service.tasks.runner import TaskContext

DEPTH = 4            # chunks queued between the event loop and the task thread
IDLE_TIMEOUT = 600   # seconds without a byte from (or room at) the client before the transfer gives up
_CLOSED = object()
_EOF = b""


class ClientGone(KvmkitError):
    code = "client_gone"
    http_status = 400


class Channel:
    """A bounded queue of byte chunks between the event loop and one task thread. ``b""`` ends the
    stream; an exception in the queue is raised on the other side; :meth:`close` (by the consumer) wakes
    a producer that waits for room, which then stops."""

    def __init__(self, depth: int = DEPTH) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[bytes | list[bytes] | BaseException] = asyncio.Queue(depth)
        self.closed = asyncio.Event()

    # event-loop side
    async def put(self, item: bytes | list[bytes] | BaseException) -> bool:
        """Queue ``item``, waiting for room; False when the consumer closed the channel."""
        if self.closed.is_set():
            return False
        if not self.queue.full():
            self.queue.put_nowait(item)
            return True
        return await self._race(self.queue.put(item)) is not _CLOSED

    async def get(self) -> bytes | list[bytes] | BaseException | object:
        """The next item, or ``_CLOSED`` when the channel was closed."""
        if not self.queue.empty():
            return self.queue.get_nowait()
        if self.closed.is_set():
            return _CLOSED
        return await self._race(self.queue.get())

    async def _race(self, op: Any) -> Any:
        job = asyncio.ensure_future(op)
        stop = asyncio.ensure_future(self.closed.wait())
        done, _ = await asyncio.wait({job, stop}, return_when=asyncio.FIRST_COMPLETED)
        if job in done:
            stop.cancel()
            return job.result()
        job.cancel()
        return _CLOSED

    def close(self) -> None:
        self.closed.set()

    # task-thread side
    def close_from_thread(self) -> None:
        self.loop.call_soon_threadsafe(self.closed.set)

    def fail_from_thread(self, err: BaseException) -> None:
        """Hand ``err`` to the consumer (or close the channel when the queue is full)."""
        def fail() -> None:
            if self.queue.full():
                self.closed.set()
            else:
                self.queue.put_nowait(err)

        self.loop.call_soon_threadsafe(fail)

    def put_from_thread(self, item: bytes | BaseException, what: str) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.put(item), self.loop)
        try:
            ok = fut.result(timeout=IDLE_TIMEOUT)
        except concurrent.futures.TimeoutError as err:
            fut.cancel()
            raise ClientGone(f"the client took nothing for {IDLE_TIMEOUT} s during {what}",
                             hint="download again with a client that keeps reading") from err
        if not ok:
            raise ClientGone(f"the client went away during {what}", hint="download it again")

    def get_from_thread(self, timeout: float = IDLE_TIMEOUT) -> bytes | list[bytes] | BaseException | object:
        fut = asyncio.run_coroutine_threadsafe(self.get(), self.loop)
        try:
            return fut.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise


class RequestBody:
    """The request body as chunks of about :data:`CHUNK` bytes for a task thread (:meth:`chunks`), read by
    :meth:`pump` on the event loop until it ends, the client goes away, or the task stopped reading."""

    def __init__(self, request: Request, length: int | None) -> None:
        self.request = request
        self.length = length
        self.channel = Channel()
        self.received = 0

    def _of(self) -> str:
        return f" of {self.length}" if self.length is not None else ""

    async def pump(self) -> None:
        """Passes what uvicorn hands over on as libvirt stream messages (joining only pieces smaller than
        half of SEND), CHUNK bytes at a time (one hop between threads per MiB)."""
        parts: list[bytes] = []
        have = 0
        batch: list[bytes] = []
        batched = 0
        put = self.channel.put
        receive = self.request.receive  # the ASGI channel itself: no generator layer per piece
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                piece = message.get("body", b"")
                more = message.get("more_body", False)
                if not piece:
                    if not more:
                        break
                    continue
                parts.append(piece)
                have += len(piece)
                self.received += len(piece)
                if have >= SEND // 2:  # uvicorn hands over ~200-250 KiB at a time: passed on as they are
                    batch.append(parts[0] if len(parts) == 1 else b"".join(parts))
                    batched += have
                    parts, have = [], 0
                    if batched >= CHUNK:
                        if not await put(batch):
                            return
                        batch, batched = [], 0
                if not more:
                    break
            if parts:
                batch.append(b"".join(parts))
            if batch and not await put(batch):
                return
            await put(_EOF)
        except ClientDisconnect:
            await put(Truncated(f"the upload was cut off: the client closed the connection after "
                                f"{self.received}{self._of()} bytes", hint="send the whole image again"))

    def chunks(self) -> Iterator[bytes]:
        """(task thread) The body's chunks; raises :class:`Truncated` when the client went away or sent
        nothing for IDLE_TIMEOUT seconds."""
        while True:
            try:
                item = self.channel.get_from_thread()
            except concurrent.futures.TimeoutError:
                raise Truncated(f"the upload stalled: no data for {IDLE_TIMEOUT} s after {self.received}"
                                f"{self._of()} bytes", hint="send the whole image again") from None
            if isinstance(item, BaseException):
                raise item
            if item is _CLOSED or item == _EOF:
                return
            assert isinstance(item, list)
            yield from item

    def stop(self) -> None:
        """(task thread) Reading is over: the pump stops (the rest of the body is left unread)."""
        self.channel.close_from_thread()


async def response_body(channel: Channel) -> AsyncIterator[bytes]:
    """A response body fed by a task thread through ``channel``; the channel is closed when the client
    goes away (the generator is cancelled or closed), so the thread stops at its next chunk."""
    try:
        while True:
            item = await channel.get()
            if isinstance(item, BaseException) or item is _CLOSED or item == _EOF:
                return  # an error: the body ends short of Content-Length, so the client sees it incomplete
            assert isinstance(item, bytes)
            yield item
    finally:
        channel.close()


class Throttled:
    """A streams.Progress callback for a task: percent and message each time the percent reaches the next
    whole number and at least every ``every`` seconds (at most ~100 + 2/s updates), with a cancel check each
    time (Cancelled stops the transfer, which then cleans up); the last chunk is always checked, so a cancel
    asked meanwhile is honoured before the end."""

    def __init__(self, ctx: TaskContext, verb: str, every: float = 0.5) -> None:
        self.ctx, self.verb, self.every = ctx, verb, every
        self.last = 0.0
        self.last_percent = 0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        whole = done * 100 // total if total else 0
        if now - self.last < self.every and whole <= self.last_percent and (total is None or done < total):
            return
        self.last, self.last_percent = now, whole
        self.ctx.check_cancel()
        percent = min(99.0, done * 100 / total) if total else 0.0
        shown = f"{done / 1024**2:.0f} MiB" + (f" of {total / 1024**2:.0f} MiB" if total else "")
        self.ctx.progress(percent, f"{self.verb} {shown}")


def percent_progress(ctx: TaskContext, message: str, lo: float = 0, hi: float = 100,
                     every: float = 0.5) -> Callable[[float], None]:
    """A qemu-img style progress(percent) callback mapped into [lo, hi] of the task, with cancel checks."""
    last = [0.0]

    def progress(pct: float) -> None:
        now = time.monotonic()
        if now - last[0] < every and pct < 100:
            return
        last[0] = now
        ctx.check_cancel()
        ctx.progress(lo + (hi - lo) * min(max(pct, 0.0), 100.0) / 100, f"{message}: {pct:.0f}%")

    return progress


async def final_task(runner: Any, task_id: str, ended: asyncio.Event) -> dict[str, Any]:
    """The task once it has ended: ``ended`` is set by its body's last act, and the runner records the end
    right after; should the body never run (the runner failed first), the task's own state says so."""
    from starlette.concurrency import run_in_threadpool

    while True:
        try:
            await asyncio.wait_for(asyncio.shield(ended.wait()), timeout=5)
        except TimeoutError:
            pass
        task: dict[str, Any] = await run_in_threadpool(runner.get, task_id)
        if task["state"] not in ("queued", "running"):
            return task
        if ended.is_set():
            await asyncio.sleep(0.01)


# --- recovery of storage tasks a previous server process left running ---------------------------------

def _step(steps: list[dict[str, Any]], name: str) -> dict[str, Any] | None:
    found = next((s for s in steps if s["name"] == name), None)
    return (found.get("data") or {}) if found is not None else None


def recover_upload(conn: Any, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """An upload the server died in: the volume it made is deleted, an existing one is marked incomplete."""
    from kvmkit.service.storage import volume_marks
    from kvmkit.service.storage.volumes import get_pool, get_volume

    intent = task.get("intent") or {}
    pool, name = intent.get("pool"), intent.get("volume")
    step = _step(steps, "upload")
    if step is None or not pool or not name:
        return ["the upload had not begun"]
    try:
        vol = get_volume(get_pool(conn, pool), name)
    except KvmkitError:
        return [f"no volume {pool}/{name} is left"]
    if step.get("existed"):
        volume_marks.set_mark(vol.path(), incomplete=f"the server stopped during an upload into it (task {task['id']})")
        return [f"volume {pool}/{name} holds part of the upload: marked incomplete (upload it again or wipe it)"]
    vol.delete(0)
    return [f"deleted volume {pool}/{name}, which the upload had made"]


def recover_pool_define(conn: Any, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """A define (build, start) the server died in: the pool is stopped and undefined again (its storage stays)."""
    from kvmkit.service.storage.pools import rollback_define

    name = (task.get("intent") or {}).get("name")
    if _step(steps, "define") is None or not name:
        return ["the define had not begun"]
    rollback_define(conn, name)
    return [f"pool {name} stopped and undefined (a directory or volume group it built stays)"]


def recover_convert(conn: Any, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """A convert the server died in: its destination file is removed unless a VM was switched to it."""
    from pathlib import Path

    from kvmkit.service.storage.volumes import domains_using

    step = _step(steps, "convert")
    dst = step.get("dst") if step else None
    if not dst or not Path(dst).exists():
        return ["no destination file is left"]
    users = domains_using(conn).get(dst)
    if users:
        return [f"kept {dst}: VM {', '.join(users)} uses it"]
    Path(dst).unlink()
    return [f"removed the partial destination {dst}"]


def register_recovery() -> None:
    from kvmkit.service.tasks.runner import RECOVERY

    RECOVERY["volume.upload"] = recover_upload
    RECOVERY["pool.define"] = recover_pool_define
    RECOVERY["image.convert"] = recover_convert
