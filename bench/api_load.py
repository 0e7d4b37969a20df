"""Scenario 5: GET /api/v1/vms under load with wrk (Debian's wrk: 2 threads, N connections, fixed time).

Issue 9: 50 concurrent clients (connections) for 30 s in a full run (5 s with --quick). wrk shares the two
cores with the server, as any load generator on this machine would; the load average before the run is
noted beside the figure."""

from __future__ import annotations

import re
import shutil

from bench.common import Row, Series, Unavailable, loadavg, run
from bench.server import Server

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m[1]) * _UNITS[m[2]]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, p50/p99 (ms), total requests and errors from ``wrk --latency`` output."""
    res: dict[str, float] = {"errors": 0.0}
    for pct, key in (("50%", "p50_ms"), ("99%", "p99_ms")):
        m = re.search(rf"^\s*{pct}\s+(\S+)", out, re.M)
        if m:
            res[key] = _ms(m[1])
    m = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if m:
        res["rps"] = float(m[1])
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = float(m[1])
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["errors"] += sum(float(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += float(m[1])
    if "rps" not in res or "p99_ms" not in res:
        raise ValueError(f"could not read wrk output:\n{out[-500:]}")
    return res


def bench_api_load(server: Server, domains: int, *, clients: int, seconds: int) -> list[Row]:
    scen = "5. API under load"
    case = f"GET /api/v1/vms, {domains} domains, {clients} clients, {seconds} s"
    wrk = shutil.which("wrk")
    if not wrk:
        raise Unavailable("wrk is not installed (apt-get install wrk)")
    load = loadavg()
    _, proc = run([wrk, "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "10s", "--latency",
                   "-H", f"Authorization: Bearer {server.token}", f"{server.base}/api/v1/vms"],
                  timeout=seconds + 60)
    r = parse_wrk(proc.stdout)
    rows = [
        Row(scen, case, "requests/s", "req/s", Series([r["rps"]]), higher_is_better=True,
            peer_missing="no peer (virsh has no server)"),
        Row(scen, case, "latency p50", "ms", Series([r["p50_ms"]]), peer_missing="no peer"),
        Row(scen, case, "latency p99", "ms", Series([r["p99_ms"]]), target="<= 100 ms", peer_missing="no peer",
            met=lambda row: row.k() <= 100),
        Row(scen, case, "errors (socket + non-2xx)", "count", Series([r["errors"]]), target="0",
            peer_missing="no peer", met=lambda row: row.k() == 0),
    ]
    rows[0].kvmkit = Series([r["rps"]], note=f"{int(r.get('requests', 0))} requests; load average before: {load}")
    return rows
