"""``kvmkit cli-server``: one warm process that runs kvmkit commands by forking (see kvmkit.cli.warm).

The server imports the heavy modules once (Typer, Rich, pydantic, libvirt, lxml and kvmkit's CLI and
service modules) and then only forks: it opens no libvirt connection and starts no thread, so each
child starts clean, opens its own connection and behaves exactly like a cold ``kvmkit`` process.

Safety:
- The socket is mode 0600 in a 0700 directory and every caller's uid (SO_PEERCRED) must be the
  server's own: a command runs with the caller's privileges or not at all.
- Only modules that read no environment variable at import time are preloaded; the child replaces its
  environment, working directory, umask and standard streams with the caller's before running.
- Before each command the server compares kvmkit's source files and the installed packages with what
  it loaded; if anything changed it refuses (the command runs cold) and re-executes itself.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import selectors
import signal
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Any

from kvmkit.cli.warm import recv_json, send_json, socket_path

PRELOAD = (
    "typer", "typer.main", "rich.console", "rich.table", "rich.progress", "pydantic", "libvirt", "lxml.etree",
    "kvmkit.cli.main", "kvmkit.cli.output", "kvmkit.cli.vm", "kvmkit.cli.snapshot", "kvmkit.cli.pool",
    "kvmkit.cli.volume", "kvmkit.cli.net", "kvmkit.cli.template", "kvmkit.cli.image",
    "kvmkit.hypervisor.connection", "kvmkit.spec.vm", "kvmkit.xml.domain", "kvmkit.service.vm_query",
    "kvmkit.service.vm_create", "kvmkit.service.vm_lifecycle", "kvmkit.service.snapshots",
)
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def code_signature() -> tuple[Any, ...]:
    """What a change of kvmkit's code or of the installed packages changes."""
    import kvmkit

    pkg = os.path.dirname(kvmkit.__file__)
    files = []
    for root, _dirs, names in os.walk(pkg):
        for name in names:
            if name.endswith(".py"):
                st = os.stat(os.path.join(root, name))
                files.append((root, name, st.st_mtime_ns, st.st_size))
    site = os.path.dirname(os.path.dirname(importlib.import_module("typer").__file__ or ""))
    return (sys.executable, os.stat(site).st_mtime_ns, tuple(sorted(files)))


@dataclass
class Job:
    conn: socket.socket
    pid: int
    pidfd: int
    what: str  # the command's first words, for the server's one line per command
    open: bool = True


@dataclass
class Server:
    path: str
    signature: tuple[Any, ...] = field(default_factory=code_signature)
    running: int = 0
    stale: bool = False  # kvmkit changed: refuse new commands, re-execute once the running ones end
    inherited: list[int] = field(default_factory=list)  # descriptors a forked child must close

    def serve(self) -> None:
        listener = _listen(self.path)
        sel = selectors.DefaultSelector()
        self.inherited = [listener.fileno(), sel.fileno()] if hasattr(sel, "fileno") else [listener.fileno()]
        sel.register(listener, selectors.EVENT_READ, "accept")
        try:
            while True:
                for key, _ in sel.select():
                    if key.data == "accept":
                        self._accept(listener, sel)
                    else:
                        self._event(key.data, key.fileobj, sel)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _accept(self, listener: socket.socket, sel: selectors.BaseSelector) -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        fds: list[int] = []
        try:
            request, fds = _receive(conn)
            pid = self._start(conn, request, fds)
        except (OSError, ValueError, ConnectionAbortedError):
            conn.close()
            if self.stale and not self.running:
                _reexec()
            return
        finally:
            for fd in fds:  # the child has its own copies now (or there is no child)
                os.close(fd)
        conn.settimeout(None)
        job = Job(conn, pid, os.pidfd_open(pid), _what(request["argv"]))
        self.running += 1
        self.inherited += [conn.fileno(), job.pidfd]
        sel.register(conn, selectors.EVENT_READ, job)
        sel.register(job.pidfd, selectors.EVENT_READ, job)

    def _start(self, conn: socket.socket, request: dict[str, Any], fds: list[int]) -> int:
        """Fork the child that runs the request; refuse callers of another user and stale code."""
        uid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[1]
        if uid != os.getuid() or len(fds) != 3:
            send_json(conn, {"refused": "not the server's user"})
            raise ConnectionAbortedError
        if self.stale or code_signature() != self.signature:
            self.stale = True
            send_json(conn, {"refused": "kvmkit changed since the server started"})
            raise ConnectionAbortedError
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            _child(request, fds, [*self.inherited, conn.fileno()])
        send_json(conn, {"pid": pid})
        return pid

    def _event(self, job: Job, fileobj: Any, sel: selectors.BaseSelector) -> None:
        if fileobj is job.conn:  # the caller forwards a signal, or went away
            try:
                msg = recv_json(job.conn)
            except (OSError, ValueError):
                msg = None
            if msg is None:
                sel.unregister(job.conn)
                job.open = False
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.pid, signal.SIGHUP)  # as a terminal hang-up would
            elif "signal" in msg:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(job.pid, int(msg["signal"]))
            return
        _, status = os.waitpid(job.pid, 0)  # the child exited
        code = os.waitstatus_to_exitcode(status)
        sel.unregister(job.pidfd)
        if job.open:
            sel.unregister(job.conn)
            with contextlib.suppress(OSError):
                send_json(job.conn, {"exit": code if code >= 0 else 128 - code})
        print(f"kvmkit cli-server: pid {job.pid} exited {code}: {job.what}", file=sys.stderr, flush=True)
        self.inherited = [fd for fd in self.inherited if fd not in (job.pidfd, job.conn.fileno())]
        os.close(job.pidfd)
        job.conn.close()
        self.running -= 1
        if self.stale and not self.running:
            _reexec()


def _what(argv: list[str]) -> str:
    """The command's group and name for the log line; never option values (they may hold secrets)."""
    from kvmkit.cli.context import extract_globals, reset

    rest = extract_globals(list(argv))
    reset()  # extract_globals records --json/--connect in the module settings: not the server's business
    words = []
    for arg in rest[:2]:
        if arg.startswith("-") or not arg.replace("-", "").isalnum():
            break
        words.append(arg)
    return " ".join(words) or "?"


def _listen(path: str) -> socket.socket:
    from kvmkit.errors import Conflict

    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # left by a server that died
    else:
        raise Conflict(f"a kvmkit cli-server already listens on {path}", hint="stop it first, or use --socket")
    finally:
        probe.close()
    old = os.umask(0o077)
    try:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
    finally:
        os.umask(old)
    listener.listen(64)
    return listener


def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    import array
    import json

    fds = array.array("i")
    head, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_SPACE(3 * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    try:
        if len(head) != 4:
            raise ValueError("short header")
        size = struct.unpack("!I", head)[0]
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("short request")
            body += chunk
        return json.loads(body), list(fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _child(request: dict[str, Any], fds: list[int], close: list[int]) -> None:  # pragma: no cover - forked child
    code = 1
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]  # out of 0-2 before dup2 onto them
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        os.umask(int(request["umask"]))
        sys.stdin = _stream(0, "r", "strict")
        sys.stdout = _stream(1, "w", "strict")
        sys.stderr = _stream(2, "w", "backslashreplace")
        sys.argv = ["kvmkit", *request["argv"]]
        from kvmkit.cli.context import reset
        from kvmkit.cli.main import main

        reset()
        code = main(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)


def _stream(fd: int, mode: str, errors: str) -> io.TextIOWrapper:
    tty = os.isatty(fd)
    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors,  # type: ignore[arg-type]
                            line_buffering=tty or fd == 2, write_through=fd == 2)


def _reexec() -> None:
    os.execv(sys.executable, [sys.executable, "-m", "kvmkit", *sys.argv[1:]])


def run(path: str | None = None) -> None:
    """Preload, then serve until killed."""
    for name in PRELOAD:
        importlib.import_module(name)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server(path or socket_path()).serve()
