"""A real ``kvmkit serve`` process for API tests, and a PostgreSQL cluster of the tests' own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
KVMKIT = str(ROOT / ".venv" / "bin" / "kvmkit")
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``kvmkit serve`` on a free loopback port with its own data directory and database."""

    def __init__(self, db: str, *, uri: str = "qemu:///system", env: dict[str, str] | None = None,
                 data_dir: Path | None = None, tls: tuple[str, str] | None = None,
                 args: list[str] | None = None) -> None:
        self.uri = uri
        self.args = list(args or [])
        self.tls = tls
        self.data_dir = data_dir or self._new_data_dir()
        self.db = f"sqlite:///{self.data_dir}/kvmkit.db" if db == "sqlite" else db
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = self.data_dir / "server.log"
        self.log_level = "warning"

    @staticmethod
    def _new_data_dir() -> Path:
        """A data directory QEMU can read from, sharing kvmkit's image cache (the micro-guest is built once)."""
        root = Path(os.environ.get("KVMKIT_TEST_DIR", "/var/lib/kvmkit/test"))
        root.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix="api-", dir=root))
        path.chmod(0o755)
        shared = Path("/var/lib/kvmkit/cache")
        shared.mkdir(parents=True, exist_ok=True)
        (path / "cache").symlink_to(shared)
        return path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "KVMKIT_DATA_DIR": str(self.data_dir), "KVMKIT_DB": self.db, **self.extra_env}

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Server:
        self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115 - the process keeps it
        tls = ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]] if self.tls else []
        self.proc = subprocess.Popen([KVMKIT, "--connect", self.uri, "serve", "--listen", f"127.0.0.1:{self.port}",
                                      "--db", self.db, "--log-level", self.log_level, *tls, *self.args],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2, verify=False).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str, stdin: str | None = None) -> Any:
        out = subprocess.run([KVMKIT, "--json", *args, "--db", self.db], env=self.env, input=stdin, text=True,
                             capture_output=True, check=False, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"kvmkit {' '.join(args)} failed: {out.stderr}")
        return json.loads(out.stdout)

    def token(self, user: str) -> str:
        return str(self.cli("token", "create", user)["token"])

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, verify=False, **kw)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)


class PostgresCluster:
    """A private PostgreSQL 15 cluster (own directory, port and socket dir), run as user postgres."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kvmkit-pg-"))
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.port = free_port()
        self._dbs = 0

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresCluster:
        self.sock.mkdir()
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.sock, "postgres", "postgres")
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                          "--no-sync", "-E", "UTF8")
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses='' -c fsync=off"
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                          str(self.dir / "pg.log"), "-w", "-t", "60", "start")
        return self

    def new_database(self) -> str:
        self._dbs += 1
        name = f"kvmkit{self._dbs}"
        self._as_postgres(str(PG_BIN / "createdb"), "-h", str(self.sock), "-p", str(self.port), name)
        return f"postgresql+psycopg://postgres@/{name}?host={self.sock}&port={self.port}"

    def stop(self) -> None:
        try:
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


class EventReader:
    """Reads /api/v1/events in a thread and keeps every event (type + JSON data)."""

    def __init__(self, server: Server, token: str) -> None:
        import threading

        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._client = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"},
                                    timeout=httpx.Timeout(30, read=None))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("event stream did not open")

    def _run(self) -> None:
        kind = None
        try:
            with self._client.stream("GET", "/api/v1/events") as r:
                for line in r.iter_lines():
                    if self._stop.is_set():
                        break
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        data = json.loads(line[6:])
                        if kind == "hello":
                            self._ready.set()
                        self.events.append({"kind": kind, **data})
        except httpx.HTTPError:
            pass

    def wait(self, timeout: float = 60, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.events):
                if all(ev.get(k) == v for k, v in match.items()):
                    return ev
            time.sleep(0.2)
        raise TimeoutError(f"no event {match} in {timeout} s; got {self.events[-10:]}")

    def close(self) -> None:
        self._stop.set()
        self._client.close()
