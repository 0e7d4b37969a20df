"""kvmkit's API server for the benchmarks: a private SQLite database, an admin token, its RSS.

The server is started as ``kvmkit serve`` in its own process (what a user runs) with ``KVMKIT_DB``
pointing into the bench work directory, so the benchmark never touches the real user database.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from bench.common import KVMKIT, PREFIX, WORK, Unavailable, log, run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, task_workers: int = 4) -> None:
        self.task_workers = task_workers
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        WORK.mkdir(parents=True, exist_ok=True)
        self.env = {"KVMKIT_DB": f"sqlite:///{WORK / 'kb-api.db'}"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.token = ""
        self.log_path = WORK / "kb-serve.log"

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        for cmd in (["serve", "--help"], ["user", "--help"], ["token", "--help"]):
            _, proc = run([KVMKIT, *cmd], check=False)
            if proc.returncode != 0:
                raise Unavailable(f"`kvmkit {cmd[0]}` is not available")
        user = f"{PREFIX}admin"
        _, proc = run([KVMKIT, "--json", "user", "add", user, "--role", "admin"], env=self.env, check=False)
        if proc.returncode != 0 and "exist" not in proc.stderr:
            raise Unavailable(f"kvmkit user add failed: {proc.stderr.strip()[:200]}")
        _, proc = run([KVMKIT, "--json", "token", "create", user, "--name", "bench"], env=self.env)
        self.token = json.loads(proc.stdout)["token"]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [KVMKIT, "serve", "--listen", f"127.0.0.1:{self.port}", "--log-level", "warning",
                 "--task-workers", str(self.task_workers)],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"kvmkit serve exited {self.proc.returncode}: {self._log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise Unavailable(f"kvmkit serve did not answer within 60 s: {self._log_tail()}")
            time.sleep(0.1)
        log(f"kvmkit serve running on port {self.port} (pid {self.proc.pid})")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-400:]
        return ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, headers=self.headers, timeout=30)

    def rss_mib(self) -> float:
        """Resident memory of the server process and its children, in MiB."""
        assert self.proc is not None
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(OSError):
            pids += [int(p) for p in children.read_text().split()]
        total_kib = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total_kib += int(line.split()[1])
        return total_kib / 1024

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc = None
