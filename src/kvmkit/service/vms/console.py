"""A VM's serial console: its log file, and an interactive session over libvirt's stream API.

The interactive console needs libvirt's event loop, which must be registered before the connection is
opened: call ``ensure_event_loop()`` first, then connect, then ``attach()``.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import Any

import libvirt

from kvmkit.errors import InvalidState, NotFound, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.lifecycle import domain, state_of

ESCAPE = b"\x1d"  # Ctrl-]

_loop_lock = threading.Lock()
_loop_started = False


def serial_log_path(conn: libvirt.virConnect, name: str) -> str | None:
    """The log file of the VM's first serial port (<serial><log file=.../>), or None when it has none."""
    from lxml import etree

    dom = domain(conn, name)
    with libvirt_errors(f"reading the definition of VM {name}"):
        root = etree.fromstring(dom.XMLDesc(0).encode())
    for el in root.iterfind("./devices/serial/log"):
        if el.get("file"):
            return str(el.get("file"))
    return None


def read_log(conn: libvirt.virConnect, name: str, *, tail: int | None = None) -> dict[str, Any]:
    """The serial log's text (the last ``tail`` lines when given)."""
    path = serial_log_path(conn, name)
    if path is None:
        raise NotFound(f"VM {name} has no serial log file",
                       hint="kvmkit creates VMs with one (--serial-log); attach live with `kvmkit vm console "
                            f"{name}` instead")
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode(errors="replace")
    except FileNotFoundError as err:
        raise NotFound(f"the serial log {path} of VM {name} does not exist yet",
                       hint="it is created when the VM first starts") from err
    if tail is not None:
        text = "".join(text.splitlines(keepends=True)[-tail:]) if tail > 0 else ""
    return {"name": name, "path": path, "text": text}


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and run it in a daemon thread (once per process)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


class _Session:
    def __init__(self, stream: libvirt.virStream, out_fd: int) -> None:
        self.stream = stream
        self.out_fd = out_fd
        self.closed = threading.Event()
        self.error: str | None = None

    def on_event(self, stream: libvirt.virStream, events: int, _opaque: Any) -> None:
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(4096)
                except libvirt.libvirtError as err:
                    self.error = err.get_error_message()
                    self.closed.set()
                    return
                if data == -2:  # nothing more for now
                    break
                if not data:  # end of stream: the VM stopped
                    self.closed.set()
                    return
                os.write(self.out_fd, data)  # type: ignore[arg-type]
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self.closed.set()

    def send(self, data: bytes) -> None:
        while data and not self.closed.is_set():
            sent = self.stream.send(data)
            if sent == -2:
                time.sleep(0.01)
                continue
            data = data[sent:]


def attach(conn: libvirt.virConnect, name: str, in_fd: int, out_fd: int, *, escape: bytes = ESCAPE,
           force: bool = False) -> dict[str, Any]:
    """Connect ``in_fd``/``out_fd`` to the VM's serial console until ``escape`` is read, ``in_fd`` ends or
    the VM stops. ``force`` takes the console over from another client. Needs ``ensure_event_loop()``
    before ``conn`` was opened."""
    if not _loop_started:
        raise OperationFailed("the libvirt event loop is not running",
                              hint="call kvmkit.service.vms.console.ensure_event_loop() before opening the connection")
    dom = domain(conn, name)
    if not dom.isActive():
        raise InvalidState(f"cannot open the console of VM {name}: it is {state_of(dom)}",
                           hint=f"start it with `kvmkit vm start {name}`, or read the log with --log")
    stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
    flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else libvirt.VIR_DOMAIN_CONSOLE_SAFE
    try:
        with libvirt_errors(f"opening the console of VM {name}"):
            dom.openConsole(None, stream, flags)
    except Exception:
        stream.abort()
        raise
    session = _Session(stream, out_fd)
    stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
                            | libvirt.VIR_STREAM_EVENT_HANGUP, session.on_event, None)
    reason = "escape"
    try:
        while not session.closed.is_set():
            ready, _, _ = select.select([in_fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(in_fd, 1024)
            if not data:
                reason = "input closed"
                break
            if escape in data:
                session.send(data[: data.index(escape)])
                break
            session.send(data)
        else:
            reason = "VM stopped" if session.error is None else f"console error: {session.error}"
    except libvirt.libvirtError as err:
        reason = f"console error: {err.get_error_message()}"
    finally:
        try:
            stream.eventRemoveCallback()
            stream.finish()
        except libvirt.libvirtError:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
    return {"name": name, "action": "console", "ended": reason}
