"""The warm CLI server runs commands exactly as a cold process would, only sooner."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

KVMKIT = str(Path(sys.executable).with_name("kvmkit"))


@pytest.fixture()
def warm(tmp_path):
    """A private ``kvmkit cli-server``; yields the environment that routes commands to it."""
    sock = tmp_path / "run" / "cli.sock"
    env = {**os.environ, "KVMKIT_CLI_SOCKET": str(sock), "KVMKIT_NO_FASTPATH": "1"}
    env.pop("KVMKIT_NO_WARM", None)
    log = tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen([KVMKIT, "cli-server"], env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert server.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "cli-server did not start"
        time.sleep(0.1)
    yield {"env": env, "server": server, "socket": sock, "log": log}
    server.terminate()
    server.wait(timeout=10)
    assert not sock.exists()


def _run(args, env, *, warm: bool, **kw):
    env = dict(env)
    if not warm:
        env["KVMKIT_NO_WARM"] = "1"
    return subprocess.run([KVMKIT, *args], env=env, capture_output=True, text=True, timeout=120, **kw)


def _served_by(warm, args, **kw) -> subprocess.CompletedProcess:
    """Run ``args`` warm and make sure the server, not a cold fallback, ran it (it logs each command)."""
    before = _served(warm)
    out = _run(args, warm["env"], warm=True, **kw)
    assert _served(warm) == before + 1, "the command ran cold"
    return out


def _served(warm) -> int:
    return warm["log"].read_text().count("kvmkit cli-server: pid ")


@pytest.mark.fast
def test_same_output_and_exit_codes_warm_and_cold(warm):
    cases = [
        ["--json", "vm", "list", "--all", "--connect", "test:///default"],
        ["vm", "list", "--all", "--connect", "test:///default"],
        ["--json", "vm", "show", "no-such-vm", "--connect", "test:///default"],
        ["vm", "frobnicate"],
        ["--help"],
    ]
    for args in cases:
        hot, cold = _served_by(warm, args), _run(args, warm["env"], warm=False)
        assert (hot.returncode, hot.stdout, hot.stderr) == (cold.returncode, cold.stdout, cold.stderr), args
    assert json.loads(_run(cases[0], warm["env"], warm=True).stdout)[0]["name"] == "test"


@pytest.mark.fast
def test_caller_environment_directory_and_stdin_are_used(warm, tmp_path):
    env = {**warm["env"], "KVMKIT_CONNECT": "test:///default"}
    out = _served_by({**warm, "env": env}, ["--json", "vm", "list", "--all"])
    assert [r["name"] for r in json.loads(out.stdout)] == ["test"]  # the caller's KVMKIT_CONNECT, not the server's
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "d.qcow2"), "1M"], check=True)
    out = _served_by(warm, ["--json", "image", "info", "d.qcow2"], cwd=tmp_path)  # relative to the caller's cwd
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["format"] == "qcow2"


@pytest.mark.fast
def test_lean_list_runs_warm_with_the_same_output(warm):
    env = {k: v for k, v in warm["env"].items() if k != "KVMKIT_NO_FASTPATH"}
    args = ["--json", "vm", "list", "--all", "--connect", "test:///default"]
    hot = _served_by({**warm, "env": env}, args)
    cold = _run(args, env, warm=False)
    typer_path = _run(args, warm["env"], warm=False)
    assert hot.returncode == cold.returncode == 0
    assert hot.stdout == cold.stdout == typer_path.stdout and hot.stderr == cold.stderr == ""


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _wait(pred, what: str, timeout: float = 60) -> None:
    """Poll until ``pred()`` is true; ``timeout`` is a guard (it takes milliseconds on an idle host)."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _in_sleep(pid: int) -> bool:
    """The process's main thread is in (clock_)nanosleep, i.e. Python's time.sleep (x86-64 numbers)."""
    try:
        return Path(f"/proc/{pid}/syscall").read_text().split()[0] in ("35", "230")
    except (OSError, IndexError):
        return False


@pytest.mark.fast
def test_a_spare_child_waits_and_a_killed_spare_is_replaced(warm):
    server = warm["server"].pid
    _wait(lambda: _children(server), "no spare forked ahead")  # before any command
    args = ["--json", "vm", "list", "--all", "--connect", "test:///default"]
    spare = _children(server)[0]
    _served_by(warm, args)
    assert f"pid {spare} exited 0: vm list" in warm["log"].read_text()  # the spare ran it
    killed = _children(server)
    for pid in killed:
        with contextlib.suppress(ProcessLookupError):  # the child that ran the command may be gone already
            os.kill(pid, signal.SIGKILL)
    _wait(lambda: not set(_children(server)) & set(killed), "the server never reaped its killed spare")
    assert _served_by(warm, args).returncode == 0  # a new child is forked for it


@pytest.mark.fast
def test_malformed_requests_are_refused_and_the_server_goes_on(warm):
    import socket

    from kvmkit.cli.warm import MESSAGE, REFUSED

    for payload in (b"\0\0\0\x05hello", b"\0\0\0\x02", b"garbage"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(warm["socket"]))
            sock.sendall(payload)  # no descriptors, no valid frame
            assert MESSAGE.unpack(sock.recv(MESSAGE.size))[0] == REFUSED
    assert _served_by(warm, ["--help"]).returncode == 0


@pytest.mark.fast
def test_socket_is_private(warm):
    sock = warm["socket"]
    assert sock.stat().st_mode & 0o777 == 0o600 or sock.parent.stat().st_mode & 0o777 == 0o700
    assert sock.parent.stat().st_mode & 0o077 == 0


@pytest.mark.fast
def test_code_change_makes_the_server_step_aside_and_reload(warm):
    import kvmkit.cli.output as target

    path = Path(target.__file__)
    st = path.stat()
    try:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        args = ["--json", "vm", "list", "--all", "--connect", "test:///default"]
        out = _run(args, warm["env"], warm=True)  # refused by the server: ran cold, same answer
        assert out.returncode == 0 and json.loads(out.stdout)[0]["name"] == "test"
        deadline = time.monotonic() + 60
        while True:  # the server re-executes itself with the new code and serves again
            try:
                _served_by(warm, args)
                break
            except AssertionError:
                assert time.monotonic() < deadline
                time.sleep(0.5)
        assert warm["server"].poll() is None
    finally:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.guest
def test_ctrl_c_reaches_the_command(warm, micro_guest):
    guest = micro_guest("warm", extra_cmdline="acpi=off")  # ignores the power button: shutdown waits
    guest.log.wait_for("KVMKIT-GUEST-READY")
    server = warm["server"].pid
    _wait(lambda: _children(server), "no spare forked ahead")
    [spare] = _children(server)  # the child that will run the command
    proc = subprocess.Popen([KVMKIT, "vm", "shutdown", guest.name, "--timeout", "120"], env=warm["env"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the only sleep on that path is shutdown's wait for the guest to power off: the command is running
    _wait(lambda: _in_sleep(spare) or proc.poll() is not None, "the command never started waiting", 120)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err, (out, err, guest.log.text()[-2000:])


@pytest.mark.fast
def test_preloaded_kvmkit_modules_read_no_environment_at_import():
    """The server's children take the caller's environment and directory after these imports ran."""
    import ast

    code = ("import sys, importlib; from kvmkit.cli.warm_server import PRELOAD\n"
            "[importlib.import_module(m) for m in PRELOAD]\n"
            "print('\\n'.join(sorted(n for n in sys.modules if n.startswith('kvmkit'))))")
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           timeout=120).stdout.split()
    assert "kvmkit.service.vms.create" in names
    offenders = []
    for name in names:
        module = sys.modules.get(name) or __import__(name, fromlist=["_"])
        if not getattr(module, "__file__", None):
            continue
        tree = ast.parse(Path(module.__file__).read_text())
        stmts = list(tree.body)
        while stmts:  # what runs at import: module level and class bodies, not function bodies
            stmt = stmts.pop()
            if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if isinstance(stmt, ast.ClassDef):
                stmts.extend(stmt.body)
                continue
            text = ast.unparse(stmt)
            if any(s in text for s in ("os.environ", "getenv", "getcwd", "Path.cwd", "Path.home")):
                offenders.append(f"{name}: {text[:120]}")
    assert not offenders, offenders
