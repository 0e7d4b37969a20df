"""Scenario 8: a 1 GiB image uploaded into a volume, through kvmkit's API against ``virsh vol-upload``.

kvmkit's side is ``PUT /api/v1/pools/P/volumes/V/content?format=raw`` of a ``kvmkit serve`` on this host, sent
by two clients: a plain HTTP/1.1 client that hands the file to the kernel (``socket.sendfile``: the client
costs next to nothing, so the row measures the server), and ``curl -T FILE`` (what a user types; curl sends 64
KiB at a time and is itself slower than the server here). The server streams the body into a libvirt stream
and answers with the finished task and the sha256 of what it stored, checked against the file's. The peer is
``virsh vol-upload`` of the same file into a volume of the same pool, made empty beforehand by ``virsh
vol-create-as`` (not timed). A fourth side is the floor (bench/upload_floor.py): a bare Python loop that
receives the file over loopback TCP, hashes it and sends it into a libvirt stream, with no HTTP server around
it; it says how fast any Python server that keeps the sha256 promise could be here. A fifth side is the same
loop without the hash (``--no-hash``): what no server that takes the bytes over a socket can beat here,
whatever it promises. The five take turns round by round (the order rotating), the file is in the page cache
for all, and every volume is deleted after its round. While kvmkit's uploads run, the server's resident memory
(VmRSS, /proc) is sampled every 20 ms: the row is the largest growth over the value just before the upload.
The CPU seconds of the server, of the clients and of libvirtd per upload are in the notes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import PREFIX, URI, Ctx, Row, Series, Unavailable, log, run
from bench.server import Server

SCEN = "8. volume upload"
SIZE = 1024 ** 3
_TCK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TCK
    return 0.0


def _rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _libvirtd() -> int | None:
    out = subprocess.run(["pgrep", "-xo", "libvirtd"], capture_output=True, text=True, check=False).stdout.split()
    return int(out[0]) if out else None


def _image(path: Path) -> str:
    """1 GiB of random bytes (64 MiB of them, repeated); returns its sha256."""
    block = os.urandom(64 * 1024 ** 2)
    sha = hashlib.sha256()
    with path.open("wb") as fh:
        for _ in range(SIZE // len(block)):
            fh.write(block)
            sha.update(block)
    return sha.hexdigest()


class _Peak:
    """The largest VmRSS of a process while the block runs (sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss_mib(self.pid))

    def __enter__(self) -> _Peak:
        self.peak = _rss_mib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib(self.pid))


def _put_file(url: str, token: str, path: Path) -> tuple[float, int, dict[str, object]]:
    """PUT ``path`` as the body (Content-Length, sent with sendfile); (seconds to the answer, status, JSON)."""
    parts = urlsplit(url)
    size = path.stat().st_size
    head = (f"PUT {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n")
    t0 = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port), timeout=600) as s:
        s.sendall(head.encode())
        with path.open("rb") as fh:
            s.sendfile(fh)
        answer = b""
        while piece := s.recv(65536):
            answer += piece
    elapsed = time.perf_counter() - t0
    status_line, _, rest = answer.partition(b"\r\n")
    body = rest.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in rest else b"{}"
    return elapsed, int(status_line.split()[1]), json.loads(body or b"{}")


def bench_upload(ctx: Ctx) -> list[Row]:
    if not shutil.which("curl"):
        raise Unavailable("curl is not installed (apt-get install curl)")
    pool = f"{PREFIX}upload"
    image = ctx.path("upload", "image.raw")
    digest = _image(image)  # written just now: in the page cache for every side
    pool_dir = ctx.path("upload", "pool")
    pool_dir.mkdir(parents=True, exist_ok=True)
    run(["virsh", "-q", "pool-create-as", pool, "dir", "--target", str(pool_dir)])
    case = "1 GiB raw image into a new volume"
    api_row = Row(SCEN, case, "to uploaded, through the API (a sendfile HTTP client)", "s", kvmkit=Series(),
                  peer=Series(), peer_name="virsh vol-upload", target=">= 80% of virsh's speed",
                  met=lambda r: r.p() / r.k() >= 0.8)
    curl_row = Row(SCEN, case, "to uploaded, through the API (curl -T)", "s", kvmkit=Series(), peer=api_row.peer,
                   peer_name="virsh vol-upload")
    floor_row = Row(SCEN, case, "the floor: a bare Python socket -> libvirt stream loop, sha256 in a second "
                    "thread, no HTTP (bench/upload_floor.py)", "s", kvmkit=Series(), peer=api_row.peer,
                    peer_name="virsh vol-upload")
    bare_row = Row(SCEN, case, "the floor without the sha256 (upload_floor.py --no-hash): what no server taking "
                   "the bytes over a socket beats", "s", kvmkit=Series(), peer=api_row.peer,
                   peer_name="virsh vol-upload")
    rss_row = Row(SCEN, case, "server RSS growth during the upload", "MiB", kvmkit=Series(), peer_missing="no peer",
                  target="< 64 MiB", met=lambda r: r.k() < 64)
    cpu: dict[str, list[float]] = {"server": [], "curl": [], "libvirtd (kvmkit)": [], "virsh": [],
                                   "libvirtd (virsh)": [], "floor (loop and its sender)": [],
                                   "floor without the hash": []}
    lvd = _libvirtd()
    server = Server()
    sides = ["api", "virsh", "curl", "floor", "bare"]
    try:
        server.start()
        assert server.proc is not None
        pid = server.proc.pid
        rounds = max(ctx.repeats, 3)
        for i in range(rounds):
            for side in sides[i % len(sides):] + sides[:i % len(sides)]:
                name = f"{PREFIX}up-{side}-{i}.raw"
                url = f"{server.base}/api/v1/pools/{pool}/volumes/{name}/content?format=raw"
                c0, l0 = _cpu(pid), _cpu(lvd) if lvd else 0.0
                t0 = os.times()
                if side in ("virsh", "floor", "bare"):
                    run(["virsh", "-q", "vol-create-as", pool, name, "0", "--format", "raw"])
                    l0, t0 = _cpu(lvd) if lvd else 0.0, os.times()
                if side == "virsh":
                    elapsed, _ = run(["virsh", "-q", "vol-upload", "--pool", pool, name, str(image)])
                    api_row.peer.samples.append(elapsed)  # type: ignore[union-attr]
                elif side in ("floor", "bare"):
                    _, proc = run([sys.executable, "-m", "bench.upload_floor", URI, pool, name, str(image)]
                                  + (["--no-hash"] if side == "bare" else []))
                    answer = json.loads(proc.stdout)
                    if side == "floor" and answer["sha256"] != digest:
                        raise RuntimeError(f"the floor loop stored {answer['sha256']}, not {digest}")
                    elapsed = float(answer["seconds"])
                    (floor_row if side == "floor" else bare_row).kvmkit.samples.append(elapsed)  # type: ignore[union-attr]
                else:
                    with _Peak(pid) as peak:
                        before = peak.peak
                        if side == "api":
                            elapsed, status, task = _put_file(url, server.token, image)
                        else:
                            elapsed, proc = run(["curl", "-sS", "--fail-with-body", "-T", str(image), "-H",
                                                 f"Authorization: Bearer {server.token}", url])
                            status, task = 201, json.loads(proc.stdout)
                    result = task.get("result") if isinstance(task, dict) else None
                    if status != 201 or not isinstance(result, dict) or result.get("sha256") != digest:
                        raise RuntimeError(f"kvmkit upload answered {status}: {str(task)[:300]}")
                    (api_row if side == "api" else curl_row).kvmkit.samples.append(elapsed)  # type: ignore[union-attr]
                    rss_row.kvmkit.samples.append(peak.peak - before)  # type: ignore[union-attr]
                    cpu["server"].append(_cpu(pid) - c0)
                    cpu["libvirtd (kvmkit)"].append((_cpu(lvd) - l0) if lvd else 0.0)
                t1 = os.times()
                children = t1.children_user + t1.children_system - t0.children_user - t0.children_system
                if side == "virsh":
                    cpu["virsh"].append(children)
                    cpu["libvirtd (virsh)"].append((_cpu(lvd) - l0) if lvd else 0.0)
                elif side == "curl":
                    cpu["curl"].append(children)
                elif side == "floor":
                    cpu["floor (loop and its sender)"].append(children)
                elif side == "bare":
                    cpu["floor without the hash"].append(children)
                log(f"upload round {i + 1}/{rounds} {side}: {elapsed:.2f} s")
                if side in ("virsh", "floor", "bare"):
                    run(["virsh", "-q", "vol-delete", "--pool", pool, name], check=False)
                else:  # through the API: kvmkit forgets the volume's owner with it
                    with server.client() as client:
                        client.delete(f"/api/v1/pools/{pool}/volumes/{name}").raise_for_status()
        ctx.notes.append("8. CPU seconds per 1 GiB upload (median): " + ", ".join(
            f"{k} {sorted(v)[len(v) // 2]:.2f}" for k, v in cpu.items() if v)
            + "; load average during the scenario: " + " ".join(Path("/proc/loadavg").read_text().split()[:3]))
    finally:
        server.stop()
        run(["virsh", "-q", "pool-destroy", pool], check=False)
        with contextlib.suppress(OSError):
            image.unlink()
    return [api_row, curl_row, floor_row, bare_row, rss_row]
