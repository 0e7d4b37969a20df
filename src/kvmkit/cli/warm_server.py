"""``kvmkit cli-server``: one warm process that runs kvmkit commands in forked children (kvmkit.cli.warm).

The server imports the heavy modules once (Typer, Rich, pydantic, libvirt, lxml, kvmkit's CLI and
service modules) and builds the Click commands of every command group; then it only forks. It opens no
libvirt connection and starts no thread, so each child starts clean, opens its own connection and
behaves exactly like a cold ``kvmkit`` process.

One child is always forked ahead ("the spare") and waits on a socketpair: a command is handed to it
(request and the caller's three descriptors) the moment it arrives, and the next spare is forked while
the command runs, so no command waits for a fork.

Safety:
- The socket is mode 0600 in a 0700 directory and every caller's uid (SO_PEERCRED) must be the
  server's own, checked before the request is read: a command runs with the caller's privileges or not
  at all.
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

from kvmkit.cli.warm import (
    EXITED,
    HEADER,
    REFUSED,
    SIGNAL,
    STARTED,
    decode_request,
    recv_message,
    send_message,
    socket_path,
)

PRELOAD = (
    "typer", "typer.main", "typer._adapters", "typer._click.decorators", "rich.console", "rich.table",
    "rich.progress", "rich.status", "rich._emoji_codes", "pydantic", "pydantic.type_adapter", "libvirt",
    "lxml.etree", "xml.etree.ElementTree",
    "kvmkit.cli.main", "kvmkit.cli.output", "kvmkit.cli.vm", "kvmkit.cli.snapshot", "kvmkit.cli.pool",
    "kvmkit.cli.volume", "kvmkit.cli.net", "kvmkit.cli.template", "kvmkit.cli.image",
    "kvmkit.cli.fastpath", "kvmkit.cli.lean_libvirt", "kvmkit.service.vms.rows", "kvmkit.service.vms.guest_ip",
    "kvmkit.hypervisor.connection", "kvmkit.host.virt_type", "kvmkit.spec.vm", "kvmkit.xml.domain",
    "kvmkit.service.vms.query", "kvmkit.service.vms.create", "kvmkit.service.vms.macs", "kvmkit.images.micro",
    "kvmkit.service.vms.lifecycle", "kvmkit.service.copies.snapshots",
)
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_FDS = struct.Struct("3i")  # the caller's stdin, stdout, stderr


def code_signature() -> tuple[Any, ...]:
    """What a change of kvmkit's code or of the installed packages changes (checked before each command)."""
    import kvmkit

    files: list[tuple[str, int, int]] = []
    dirs = [os.path.dirname(kvmkit.__file__)]
    while dirs:
        with os.scandir(dirs.pop()) as entries:
            for entry in entries:
                if entry.name.endswith(".py"):
                    st = entry.stat()
                    files.append((entry.path, st.st_mtime_ns, st.st_size))
                elif entry.is_dir() and entry.name != "__pycache__":
                    dirs.append(entry.path)
    site = os.path.dirname(os.path.dirname(importlib.import_module("typer").__file__ or ""))
    return (sys.executable, os.stat(site).st_mtime_ns, tuple(sorted(files)))


@dataclass
class Child:
    pid: int
    pidfd: int
    control: socket.socket  # the server's end of the socketpair the child waits on
    conn: socket.socket | None = None  # the caller, once the child runs a command
    what: str = ""  # the command's first words, for the server's one line per command
    code: int | None = None  # the exit code the child reported before exiting


@dataclass
class Server:
    path: str
    signature: tuple[Any, ...] = field(default_factory=code_signature)
    stale: bool = False  # kvmkit changed: refuse new commands, re-execute once the running ones end
    jobs: dict[int, Child] = field(default_factory=dict)  # pid -> child running a command
    spare: Child | None = None
    sel: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    listener: socket.socket | None = None

    def serve(self) -> None:
        self.listener = _listen(self.path)
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        try:
            self._fork_spare()
            while True:
                for key, _ in self.sel.select():
                    what, child = key.data
                    if what == "accept":
                        self._accept()
                    elif self.sel.get_map().get(key.fd) is not key:
                        continue  # unregistered by an earlier event of this batch (the child exited)
                    elif what == "caller":
                        self._from_caller(child)
                    elif what == "report":
                        self._reported(child)
                    else:
                        self._exited(child)
        finally:
            self._drop_spare()
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def _inherited(self) -> list[int]:
        """Descriptors of the server that a new child must close."""
        fds = [self.sel.fileno()] if hasattr(self.sel, "fileno") else []
        if self.listener is not None:
            fds.append(self.listener.fileno())
        for child in [*self.jobs.values(), *([self.spare] if self.spare else [])]:
            fds += [child.pidfd, child.control.fileno()] + ([child.conn.fileno()] if child.conn else [])
        return fds

    def _fork_spare(self) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        close = [*self._inherited(), mine.fileno()]
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child, which never returns
            _child(theirs, close)
        theirs.close()
        self.spare = Child(pid, os.pidfd_open(pid), mine)
        self.sel.register(self.spare.pidfd, selectors.EVENT_READ, ("exit", self.spare))

    def _drop_spare(self) -> None:
        spare, self.spare = self.spare, None
        if spare is None:
            return
        self.sel.unregister(spare.pidfd)
        spare.control.close()  # the spare reads EOF and exits
        with contextlib.suppress(ChildProcessError):
            os.waitpid(spare.pid, 0)
        os.close(spare.pidfd)

    def _accept(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        conn.settimeout(5)
        fds: list[int] = []
        try:
            uid = _CRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[1]
            if uid != os.getuid():
                raise ConnectionAbortedError("not the server's user")
            body, fds = _receive(conn)
            request = decode_request(body)
            if self.stale or code_signature() != self.signature:
                self.stale = True
                raise ConnectionAbortedError("kvmkit changed since the server started")
            child = self._hand_over(conn, body, fds, request)
        except (OSError, ValueError, ConnectionAbortedError):
            with contextlib.suppress(OSError):
                send_message(conn, REFUSED)
            conn.close()
            if self.stale and not self.jobs:
                _reexec(self)
            return
        finally:
            for fd in fds:  # the child has its own copies now (or there is no child)
                os.close(fd)
        if child.conn is not None:
            conn.settimeout(None)
            self.sel.register(conn, selectors.EVENT_READ, ("caller", child))
        self._fork_spare()

    def _hand_over(self, conn: socket.socket, body: bytes, fds: list[int], request: dict[str, Any]) -> Child:
        """Give the request to the spare; the caller hears the pid of the child that runs it."""
        if self.spare is None:
            self._fork_spare()
        child, self.spare = self.spare, None
        assert child is not None
        try:
            child.control.sendmsg([HEADER.pack(len(body)) + body],
                                  [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _FDS.pack(*fds))])
        except OSError:  # the spare died: this command runs cold, the next one gets a new spare
            self.sel.unregister(child.pidfd)
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
            self._reap(child)
            raise
        child.conn, child.what = conn, _what(request["argv"])
        self.jobs[child.pid] = child
        self.sel.register(child.control, selectors.EVENT_READ, ("report", child))
        try:
            send_message(conn, STARTED, child.pid)
        except OSError:  # the caller is gone already: as a terminal hang-up would, stop the command
            conn.close()
            child.conn = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGHUP)
        return child

    def _from_caller(self, child: Child) -> None:
        """The caller forwards a signal, or went away."""
        assert child.conn is not None
        try:
            msg = recv_message(child.conn)
        except OSError:
            msg = None
        if msg is None:
            self.sel.unregister(child.conn)
            child.conn.close()
            child.conn = None
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGHUP)  # as a terminal hang-up would
        elif msg[0] == SIGNAL:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, msg[1])

    def _reported(self, child: Child) -> None:
        """The child has flushed its output and tells its exit code: the caller may go on before the child
        has finished exiting (tearing down a copy of this process takes a few ms)."""
        self.sel.unregister(child.control)
        try:
            msg = recv_message(child.control)
        except OSError:
            msg = None
        if msg is not None and msg[0] == EXITED:
            child.code = msg[1]
            self._finish(child, msg[1])

    def _finish(self, child: Child, code: int) -> None:
        """Log the command's exit code, then tell the caller (in this order: whoever reads the log once the
        caller has returned finds the line)."""
        print(f"kvmkit cli-server: pid {child.pid} exited {code}: {child.what}", file=sys.stderr, flush=True)
        if child.conn is not None:
            self.sel.unregister(child.conn)
            with contextlib.suppress(OSError):
                send_message(child.conn, EXITED, code)
            child.conn.close()
            child.conn = None

    def _exited(self, child: Child) -> None:
        self.sel.unregister(child.pidfd)
        if child is not self.spare:
            with contextlib.suppress(KeyError):  # still registered when it exited without reporting
                self.sel.unregister(child.control)
        status = self._reap(child)
        if child is self.spare:  # died while waiting (killed?): the next command forks another
            self.spare = None
            return
        del self.jobs[child.pid]
        if child.code is None:  # died without reporting (killed by a signal)
            self._finish(child, status if status >= 0 else 128 - status)
        if self.stale and not self.jobs:
            _reexec(self)

    @staticmethod
    def _reap(child: Child) -> int:
        _, status = os.waitpid(child.pid, 0)
        os.close(child.pidfd)
        child.control.close()
        return os.waitstatus_to_exitcode(status)


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


def _receive(conn: socket.socket) -> tuple[bytes, list[int]]:
    """One framed request and the descriptors that came with it (closed again if the frame is bad)."""
    import array

    fds = array.array("i")
    head, ancdata, _flags, _addr = conn.recvmsg(HEADER.size, socket.CMSG_SPACE(3 * fds.itemsize),
                                                socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    try:
        if len(head) != HEADER.size or len(fds) != 3:
            raise ValueError("short header or missing descriptors")
        size = HEADER.unpack(head)[0]
        body = b""
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("short request")
            body += chunk
        return body, list(fds)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _child(control: socket.socket, close: list[int]) -> None:  # pragma: no cover - forked child
    """The spare: wait for a command on ``control``, then run it as the caller would have."""
    code = 1
    try:
        for fd in close:
            with contextlib.suppress(OSError):
                os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            body, fds = _receive(control)
        except (OSError, ValueError):  # the server closed the pair (stopping or re-executing)
            os._exit(0)
        request = decode_request(body)
        import fcntl

        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds]  # out of 0-2 before dup2 onto them
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        sys.stdin = _stream(0, "r", "strict")
        sys.stdout = _stream(1, "w", "strict")
        sys.stderr = _stream(2, "w", "backslashreplace")
        sys.argv = ["kvmkit", *request["argv"]]
        from kvmkit.cli.context import reset
        from kvmkit.cli.main import run_here

        reset()
        code = run_here(list(request["argv"]))
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
        code = code & 0xFF if isinstance(code, int) else 1  # what the operating system would report
        with contextlib.suppress(Exception):
            send_message(control, EXITED, code)  # all output is out: the caller need not wait for our exit
        os._exit(code)


def _stream(fd: int, mode: str, errors: str) -> io.TextIOWrapper:
    tty = os.isatty(fd)
    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(buffered, encoding="utf-8", errors=errors,  # type: ignore[arg-type]
                            line_buffering=tty or fd == 2, write_through=fd == 2)


def _reexec(server: Server) -> None:
    server._drop_spare()
    os.execv(sys.executable, [sys.executable, "-m", "kvmkit", *sys.argv[1:]])


def run(path: str | None = None) -> None:
    """Preload, then serve until killed."""
    for name in PRELOAD:
        importlib.import_module(name)
    from kvmkit.cli.main import build_commands

    build_commands()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Server(path or socket_path()).serve()
