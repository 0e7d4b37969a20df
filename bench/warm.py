"""kvmkit's CLI measured two ways: cold (a new Python process per command, KVMKIT_NO_WARM=1) and warm
(the same command handed to a running ``kvmkit cli-server``, see src/kvmkit/cli/warm.py)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

from bench.common import KVMKIT, WORK, log

COLD = {"KVMKIT_NO_WARM": "1"}


@contextlib.contextmanager
def cli_server() -> Iterator[dict[str, str]]:
    """A private ``kvmkit cli-server`` for the duration; yields the environment that routes commands to it."""
    sock = WORK / "cli-server" / "cli.sock"
    sock.parent.mkdir(parents=True, exist_ok=True)
    env = {"KVMKIT_CLI_SOCKET": str(sock)}
    with (WORK / "cli-server" / "server.log").open("w") as out:
        proc = subprocess.Popen([KVMKIT, "cli-server"], env={**_environ(), **env}, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kvmkit cli-server did not start: see " + str(out.name))
            time.sleep(0.1)
        yield env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _environ() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("KVMKIT_NO_WARM", None)
    return env


__all__ = ["COLD", "cli_server", "log", "rss_mib"]
