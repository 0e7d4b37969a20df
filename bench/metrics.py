"""Metrics benchmarks: the history database's size for 1000 VMs x 24 h, and the time of a /metrics scrape.

``python -m bench.metrics [--vms 1000] [--hours 24] [--interval 10] [--scrape-domains 1000]``

- History: synthetic samples of ``--vms`` VMs (and the host) are stored at simulated timestamps every
  ``--interval`` seconds for ``--hours`` hours through the sampler's own storage code
  (``History.acquire``, ``record``, ``maintain``: roll-ups and pruning included) into a fresh SQLite
  database; reported: its file size (MiB), rows and bytes per row. A second figure continues the run one
  more hour past 24 h, when pruning has started, to show that the size stays put.
- Scrape: ``--scrape-domains`` shell domains are defined (the listing scenario's harness, ``kb-list-*``) and
  ``GET /metrics`` of a ``kvmkit serve`` is timed (median of 10, kept-alive client), beside the bulk
  ``getAllDomainStats`` call alone that it is built on. The domains are removed afterwards.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from bench.common import WORK, Row, Series, log


def _samples(rng: random.Random, n: int) -> list[tuple[float, int, float, float, float, float]]:
    """Per VM: (cpu %, memory used KiB, disk read, disk write, rx, tx B/s), mostly idle like real fleets."""
    out = []
    for _ in range(n):
        busy = rng.random() < 0.2
        out.append((rng.uniform(0, 100) if busy else rng.uniform(0, 3), rng.randint(200_000, 4_000_000),
                    rng.choice((0.0, 0.0, 0.0, rng.uniform(0, 5e6))), rng.choice((0.0, 0.0, rng.uniform(0, 2e6))),
                    rng.choice((0.0, rng.uniform(0, 1e5))), rng.choice((0.0, rng.uniform(0, 1e5)))))
    return out


def history_size(vms: int = 1000, hours: float = 24, interval: int = 10, extra_hours: float = 1,
                 path: Path | None = None) -> dict[str, float]:
    """Fill a fresh SQLite history like the sampler would; the size after ``hours`` and ``hours + extra``."""
    from sqlalchemy import func, select

    from kvmkit.service.metrics.history import History, Sample
    from kvmkit.store.db import Store
    from kvmkit.store.models import MetricPoint

    path = path or WORK / "kb-metrics-history.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    store = Store(f"sqlite:///{path}")
    history = History(store)
    rng = random.Random(42)
    names = [f"vm-{i:04d}" for i in range(vms)]
    base = _samples(rng, vms)
    start = 1_800_000_000 // 300 * 300
    out: dict[str, float] = {}
    t0 = time.monotonic()
    checkpoints = {int(hours * 3600): "24h", int((hours + extra_hours) * 3600): "after"}
    end = max(checkpoints)
    for offset in range(0, end + 1, interval):
        ts = start + offset
        history.acquire("bench-host", "bench", ts, ttl=3 * interval, interval=interval)
        wobble = rng.random()
        samples = {name: Sample(cpu_percent=cpu * wobble, mem_used_kib=mem, mem_total_kib=4_194_304,
                                disk_rd=rd * wobble, disk_wr=wr, net_rx=rx * wobble, net_tx=tx)
                   for name, (cpu, mem, rd, wr, rx, tx) in zip(names, base, strict=True)}
        host = Sample(cpu_percent=40 * wobble, mem_used_kib=200_000_000, mem_total_kib=500_000_000,
                      disk_rd=sum(s.disk_rd or 0 for s in samples.values()), disk_wr=0, net_rx=0, net_tx=0,
                      ksm_saved_kib=1_000_000, vms_running=vms)
        history.record("bench-host", ts, samples, host)
        history.maintain("bench-host", ts, grace=interval + 5)
        if offset % 3600 == 0:
            log(f"history: {offset // 3600} h simulated in {time.monotonic() - t0:.0f} s")
        label = checkpoints.get(offset)
        if label:
            with store.engine.connect() as c:
                c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            with store.session() as s:
                counts = dict(s.execute(select(MetricPoint.step, func.count()).group_by(MetricPoint.step)).all())
            size = path.stat().st_size
            rows = sum(counts.values())
            out[f"{label}_mib"] = size / 2**20
            out[f"{label}_raw_rows"] = counts.get(0, 0)
            out[f"{label}_rollup_rows"] = counts.get(300, 0)
            out[f"{label}_bytes_per_row"] = size / max(rows, 1)
            log(f"history at {offset / 3600:.0f} h: {size / 2**20:.1f} MiB, {counts} rows, "
                f"{size / max(rows, 1):.1f} B/row")
    out["simulate_seconds"] = time.monotonic() - t0
    store.engine.dispose()
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    return out


def scrape_time(domains: int = 1000, repeats: int = 10) -> dict[str, float]:
    """Median ms of GET /metrics and of the bare bulk call, with ``domains`` shell domains defined."""
    from bench.common import Ctx, reconnect
    from bench.listing import Domains
    from bench.server import Server
    from kvmkit.host.virt_type import choose_virt_type
    from kvmkit.service.metrics.collect import DOMAIN_STATS, NOWAIT

    conn = reconnect()
    ctx = Ctx(conn, choose_virt_type()[0], "", "", "", False, 1)
    shells = Domains(ctx)
    try:
        log(f"scrape: defining {domains} shell domains")
        shells.ensure(domains)
        bulk = []
        for _ in range(repeats):
            t = time.perf_counter()
            conn.getAllDomainStats(DOMAIN_STATS, NOWAIT)
            bulk.append((time.perf_counter() - t) * 1000)
        with Server() as server, server.client() as client:
            client.get("/metrics").raise_for_status()  # warm
            times, size = [], 0
            for _ in range(repeats):
                t = time.perf_counter()
                r = client.get("/metrics")
                times.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
                size = len(r.content)
            found = r.text.count('libvirt_domain_info_vstate{domain="')
        if found < domains:
            raise RuntimeError(f"/metrics listed {found} domains, expected at least {domains}")
        return {"scrape_ms": statistics.median(times), "bulk_ms": statistics.median(bulk), "bytes": size,
                "domains": found}
    finally:
        shells.remove()


def bench_metrics(ctx: object = None) -> list[Row]:
    """RESULTS.md rows (for bench/main.py's SCENARIOS): scrape time at 1000 domains, history size."""
    scen = "8. metrics"
    s = scrape_time()
    h = history_size()
    scrape = Row(scen, f"{s['domains']:.0f} domains", "GET /metrics (kept-alive client)", "ms",
                 kvmkit=Series([s["scrape_ms"]]), peer=Series([s["bulk_ms"]]),
                 peer_name="getAllDomainStats alone")
    size = Row(scen, "1000 VMs x 24 h, 10 s samples, SQLite", "history database size", "MiB",
               kvmkit=Series([h["24h_mib"]]), target="bounded (pruned)")
    return [scrape, size]


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.metrics")
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--hours", type=float, default=24)
    p.add_argument("--interval", type=int, default=10)
    p.add_argument("--scrape-domains", type=int, default=1000, help="0: skip the scrape timing")
    p.add_argument("--no-history", action="store_true")
    args = p.parse_args()
    if args.scrape_domains:
        print("scrape:", scrape_time(args.scrape_domains))
    if not args.no_history:
        print("history:", history_size(args.vms, args.hours, args.interval))


if __name__ == "__main__":
    main()
