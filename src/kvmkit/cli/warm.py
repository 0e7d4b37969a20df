"""Client side of the warm CLI: hand this command to a running ``kvmkit cli-server`` if there is one.

A cold ``kvmkit`` command spends most of its time importing Typer, pydantic, Rich and libvirt before it
makes one libvirt call (~0.2-0.3 s on a small host; virsh answers in ~15 ms). ``kvmkit cli-server``
(kvmkit.cli.warm_server) keeps one process with those modules imported and a child already forked; the
child takes over this process's stdin/stdout/stderr (passed over a Unix socket), environment, working
directory and umask, runs the same ``kvmkit.cli.main`` code and reports the exit code. Signals this
process receives (Ctrl-C, SIGTERM, SIGHUP, SIGQUIT) are forwarded to the child.

This module runs before anything else on every command, so it uses only C modules that are cheap to
import: ``_socket`` and ``_signal`` rather than ``socket`` and ``signal`` (those pull in ``enum`` and
``selectors``, ~7 ms here), and a plain wire format instead of JSON:

- request: ``!I`` length, then NUL-separated fields ``MAGIC, cwd, umask (octal), argc, argv..., env
  "KEY=VALUE"...`` (neither argv nor the environment can hold a NUL), with fds 0, 1, 2 attached;
- messages both ways: one kind byte and a ``!i`` number: ``P`` pid (the child took the command),
  ``R`` refused (run it cold), ``X`` exit code, and from the client ``S`` a signal to forward.

Anything unexpected (no server, a server of another user or an older code version, a broken socket
before the child started) returns None and the command runs here, cold. ``KVMKIT_NO_WARM=1`` turns
delegation off.
"""

from __future__ import annotations

import _socket
import os
import struct

MAGIC = b"kvmkit-warm-2"
HEADER = struct.Struct("!I")
MESSAGE = struct.Struct("!ci")
STARTED, REFUSED, EXITED, SIGNAL = b"P", b"R", b"X", b"S"
FORWARDED_SIGNALS = (2, 15, 1, 3)  # SIGINT, SIGTERM, SIGHUP, SIGQUIT (numbers: `signal` is not imported)


def socket_path() -> str:
    """Where the server listens: ``$KVMKIT_CLI_SOCKET``, else ``<data dir>/run/cli.sock``."""
    from kvmkit.config import DEFAULT_DATA_DIR

    return os.environ.get("KVMKIT_CLI_SOCKET") or os.path.join(
        os.environ.get("KVMKIT_DATA_DIR") or DEFAULT_DATA_DIR, "run", "cli.sock")


def encode_request(argv: list[str], env: dict[str, str], cwd: str, umask: int) -> bytes:
    fields = [MAGIC, os.fsencode(cwd), b"%o" % umask, b"%d" % len(argv), *map(os.fsencode, argv),
              *(os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items())]
    body = b"\0".join(fields)
    return HEADER.pack(len(body)) + body


def decode_request(body: bytes) -> dict:
    """The request as {"argv", "env", "cwd", "umask"}; ValueError when it is not one."""
    fields = [os.fsdecode(f) for f in body.split(b"\0")]
    if len(fields) < 4 or fields[0] != MAGIC.decode():
        raise ValueError("not a kvmkit warm request")
    argc = int(fields[3])
    argv, env = fields[4:4 + argc], fields[4 + argc:]
    if len(argv) != argc or any("=" not in e for e in env):
        raise ValueError("malformed kvmkit warm request")
    return {"argv": argv, "env": dict(e.split("=", 1) for e in env), "cwd": fields[1], "umask": int(fields[2], 8)}


def send_message(sock: _socket.socket, kind: bytes, value: int = 0) -> None:
    sock.sendall(MESSAGE.pack(kind, value))


def recv_message(sock: _socket.socket) -> tuple[bytes, int] | None:
    """One message, or None when the peer closed the connection."""
    buf = b""
    while len(buf) < MESSAGE.size:
        chunk = sock.recv(MESSAGE.size - len(buf))
        if not chunk:
            return None
        buf += chunk
    kind, value = MESSAGE.unpack(buf)
    return kind, value


def try_delegate(argv: list[str]) -> int | None:
    """Run ``argv`` in the warm server and return its exit code, or None to run it here."""
    if os.environ.get("KVMKIT_NO_WARM"):
        return None
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(socket_path())
        umask = os.umask(0o022)
        os.umask(umask)
        request = encode_request(argv, dict(os.environ), os.getcwd(), umask)
        fds = struct.pack("3i", 0, 1, 2)
        sent = sock.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        if sent < len(request):
            sock.sendall(request[sent:])
        started = recv_message(sock)
    except (OSError, ValueError):
        sock.close()
        return None
    if not started or started[0] != STARTED:
        sock.close()
        return None  # refused (stale code, another user): run cold
    return _wait(sock)


def _wait(sock: _socket.socket) -> int:
    import _signal

    def forward(signum: int, _frame: object) -> None:
        try:
            send_message(sock, SIGNAL, signum)
        except OSError:
            pass

    for sig in FORWARDED_SIGNALS:
        _signal.signal(sig, forward)
    while True:
        try:
            msg = recv_message(sock)
        except InterruptedError:
            continue
        except OSError:
            msg = None
        if msg is None:
            os.write(2, b"error: kvmkit cli-server stopped while running this command\n"
                        b"hint: run it again (KVMKIT_NO_WARM=1 runs it without the server)\n")
            return 1
        if msg[0] == EXITED:
            return msg[1]
