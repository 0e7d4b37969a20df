"""The lifecycle, resource, console and device commands through the real `kvmkit` executable (--json)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

KVMKIT = [sys.executable, "-m", "kvmkit"]


def kvmkit(*args: str, ok: bool = True, timeout: float = 120) -> dict | list:
    res = subprocess.run([*KVMKIT, "--json", *args], capture_output=True, text=True, timeout=timeout)
    if ok:
        assert res.returncode == 0, f"kvmkit {' '.join(args)} failed: {res.stderr}"
    else:
        assert res.returncode == 1, f"kvmkit {' '.join(args)} should have failed: {res.stdout}"
        assert res.stderr.startswith("error: "), res.stderr
    return json.loads(res.stdout)


@pytest.mark.guest
def test_lifecycle_commands_with_json(micro_guest, prefix):
    guest = micro_guest("cli", start=False, vcpus=1, max_vcpus=2)
    name = guest.name
    assert kvmkit("vm", "start", name)["state"] == "running"
    guest.log.wait_status(cpus=1)
    assert kvmkit("vm", "suspend", name)["state"] == "paused"
    err = kvmkit("vm", "suspend", name, ok=False)
    assert err["code"] == "invalid_state" and err["error"] == f"cannot suspend VM {name}: it is paused; it is " \
                                                              "already paused"
    assert kvmkit("vm", "resume", name)["state"] == "running"
    mark = guest.log.offset()
    out = kvmkit("vm", "set", name, "--vcpus", "2", "--live")
    assert out["changes"][0]["vcpus"] == 2 and out["changes"][0]["live"] and not out["changes"][0]["config"]
    guest.log.wait_status(after=mark, cpus=2)
    err = kvmkit("vm", "set", name, "--vcpus", "4", "--live", ok=False)
    assert "maximum while running is 2" in err["error"] and "--config" in err["hint"]
    stats = kvmkit("vm", "stats", name)
    assert [r["name"] for r in stats] == [name] and stats[0]["vcpus"] == 2
    assert any(r["name"] == name for r in kvmkit("vm", "stats"))
    log = kvmkit("vm", "console", name, "--log")
    assert "KVMKIT-GUEST-READY" in log["text"]
    done = kvmkit("vm", "shutdown", name, "--timeout", "60")
    assert done["state"] == "shut-off" and done["forced"] is False
    err = kvmkit("vm", "set", name, "--memory", "128M", "--live", ok=False)
    assert err["code"] == "invalid_state" and "it is shut off" in err["error"]
    err = kvmkit("vm", "set", name, "--memory", "12Q", ok=False)
    assert err["code"] == "invalid" and "12Q" in err["error"]
    assert kvmkit("vm", "set", name, "--autostart", "on")["changes"][0]["autostart"] is True
    renamed = kvmkit("vm", "rename", name, f"{prefix}cli2")
    assert renamed["name"] == f"{prefix}cli2" and renamed["uuid"] == guest.dom.UUIDString()
    err = kvmkit("vm", "start", name, ok=False)
    assert err["code"] == "not_found"
    gone = kvmkit("vm", "delete", f"{prefix}cli2", "--storage")
    assert gone["state"] == "deleted"


@pytest.mark.guest
def test_disk_and_nic_commands(micro_guest, workdir):
    disk = workdir / "c.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    guest = micro_guest("clidev", start=False)
    err = kvmkit("vm", "disk", "attach", guest.name, "--path", str(disk), "--format", "qed", ok=False)
    assert "invalid disk format 'qed'" in err["error"]
    out = kvmkit("vm", "disk", "attach", guest.name, "--path", str(disk), "--format", "qcow2")
    assert out["target"] == "vda" and out["config"] and not out["live"]
    assert kvmkit("vm", "disk", "detach", guest.name, "vda")["target"] == "vda"
    nic = kvmkit("vm", "nic", "attach", guest.name, "--network", "default")
    assert nic["mac"].startswith("52:54:00:")
    assert kvmkit("vm", "nic", "detach", guest.name, nic["mac"])["mac"] == nic["mac"]


@pytest.mark.guest
def test_interactive_console_on_a_terminal(micro_guest):
    guest = micro_guest("clitty")
    guest.log.wait_status()
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI attached to a terminal
        os.execv(sys.executable, [*KVMKIT, "vm", "console", guest.name])
    got = b""

    def read_until(needle: bytes, timeout: float = 60) -> None:
        nonlocal got
        deadline = time.monotonic() + timeout
        while needle not in got:
            assert time.monotonic() < deadline, f"{needle!r} not seen; got {got[-500:]!r}"
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    got += os.read(fd, 4096)
                except OSError:
                    break

    try:
        read_until(b"leave with Ctrl-]")
        time.sleep(0.5)
        os.write(fd, b"\recho KT-PTY-$((6*7))\r")
        read_until(b"KT-PTY-42")
        os.write(fd, b"\x1d")
        read_until(b"console closed (escape)", timeout=20)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(fd)
