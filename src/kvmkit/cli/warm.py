"""Client side of the warm CLI: hand this command to a running ``kvmkit cli-server`` if there is one.

A cold ``kvmkit`` command spends most of its time importing Typer, pydantic, Rich and libvirt before it
makes one libvirt call (~0.2-0.3 s on a small host; virsh answers in ~15 ms). ``kvmkit cli-server``
(kvmkit.cli.warm_server) keeps one process with those modules imported; for each command it forks a
child that takes over this process's stdin/stdout/stderr (passed over a Unix socket), environment,
working directory and umask, runs the same ``kvmkit.cli.main.main`` and reports the exit code. Signals
this process receives (Ctrl-C, SIGTERM, SIGHUP) are forwarded to the child.

This module is imported before anything else on every command, so it imports only the standard
library's cheapest modules. Anything unexpected (no server, a server of another user or an older
code version, a broken socket before the child started) returns None and the command runs here, cold.
``KVMKIT_NO_WARM=1`` turns delegation off.
"""

from __future__ import annotations

import os
import socket
import struct

HEADER = struct.Struct("!I")


def socket_path() -> str:
    """Where the server listens: ``$KVMKIT_CLI_SOCKET``, else ``<data dir>/run/cli.sock``."""
    from kvmkit.config import DEFAULT_DATA_DIR

    return os.environ.get("KVMKIT_CLI_SOCKET") or os.path.join(
        os.environ.get("KVMKIT_DATA_DIR") or DEFAULT_DATA_DIR, "run", "cli.sock")


def send_json(sock: socket.socket, obj: object, fds: list[int] | None = None) -> None:
    import json

    data = json.dumps(obj).encode()
    msg = HEADER.pack(len(data)) + data
    if fds:
        import array

        sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.sendall(msg)


def recv_json(sock: socket.socket) -> dict | None:
    """One message, or None when the peer closed the connection."""
    import json

    head = _recv_exact(sock, HEADER.size)
    if head is None:
        return None
    body = _recv_exact(sock, HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = b""
    while len(buf) < size:
        chunk = sock.recv(size - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def try_delegate(argv: list[str]) -> int | None:
    """Run ``argv`` in the warm server and return its exit code, or None to run it here."""
    if os.environ.get("KVMKIT_NO_WARM"):
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path())
        umask = os.umask(0o022)
        os.umask(umask)
        send_json(sock, {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask}, [0, 1, 2])
        started = recv_json(sock)
    except (OSError, ValueError):
        sock.close()
        return None
    if not started or "pid" not in started:
        sock.close()
        return None  # refused (stale code, another user): run cold
    return _wait(sock)


def _wait(sock: socket.socket) -> int:
    import signal

    def forward(signum: int, _frame: object) -> None:
        try:
            send_json(sock, {"signal": signum})
        except OSError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, forward)
    while True:
        try:
            msg = recv_json(sock)
        except OSError:
            msg = None
        if msg is None:
            os.write(2, b"error: kvmkit cli-server stopped while running this command\n"
                        b"hint: run it again (KVMKIT_NO_WARM=1 runs it without the server)\n")
            return 1
        if "exit" in msg:
            return int(msg["exit"])
