"""Stopping and starting the shared libvirtd on purpose (outage tests), so that it is always running again
afterwards: a test that leaves the daemon stopped fails every test after it, and other users of the host.

No systemd here: the daemon is stopped with SIGTERM (SIGKILL after a minute) and started with
scripts/start-libvirtd, as setup.sh starts it (under a subreaper that reaps its QEMUs). A start is only done
once qemu:///system answers again; the script returns before the daemon is ready, and a new daemon can exit
at once while the old one still holds its pid file, so the start is retried until the socket answers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import libvirt

START = Path(__file__).resolve().parents[2] / "scripts" / "start-libvirtd"


def under_systemd() -> bool:
    return subprocess.run(["systemctl", "is-active", "--quiet", "libvirtd"], check=False,
                          capture_output=True).returncode == 0


def pids() -> list[int]:
    """The pids of this host's running libvirtd processes (not a test bed's, which run in mount namespaces of
    their own; not zombies)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == "libvirtd" and _alive(proc) and _same_mount_ns(proc):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _alive(proc: Path) -> bool:
    """Not a zombie: an exited daemon whose parent has not reaped it yet still shows its name."""
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def _same_mount_ns(proc: Path) -> bool:
    """A test bed's daemons run in mount namespaces of their own: they are not this host's libvirtd."""
    return os.readlink(proc / "ns" / "mnt") == os.readlink("/proc/self/ns/mnt")


def stop() -> None:
    found = pids()
    assert found, "libvirtd is not running"
    for pid in found:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids():  # did not stop in a minute
        os.kill(pid, signal.SIGKILL)


def _answers() -> bool:
    try:
        libvirt.open("qemu:///system").close()
        return True
    except libvirt.libvirtError:
        return False


def start(timeout: float = 120) -> None:
    """Start libvirtd unless it runs, and return once qemu:///system answers (AssertionError otherwise)."""
    deadline = time.monotonic() + timeout
    while True:
        if not pids():
            subprocess.run([str(START)], check=False, timeout=60)
        settle = time.monotonic() + 10
        while time.monotonic() < settle:
            if _answers():
                return
            if not pids():
                break  # it exited: start it again
            time.sleep(0.2)
        assert time.monotonic() < deadline, f"libvirtd did not start again: run {START} by hand"


def restart() -> None:
    if under_systemd():
        subprocess.run(["systemctl", "restart", "libvirtd"], check=True, timeout=120)
        return
    try:
        stop()
    finally:
        start()
