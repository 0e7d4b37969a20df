"""The metrics history on a real database (SQLite and PostgreSQL): samples stored at simulated timestamps
through the same code the sampler uses, rolled up into 5-minute points, pruned past their retention (the
table stops growing), read back as series; one server per host holds the sampling lease."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from kvmkit.errors import InvalidInput
from kvmkit.service.metrics import query
from kvmkit.service.metrics.collect import Domain
from kvmkit.service.metrics.history import ROLLUP, History, Sample
from kvmkit.service.metrics.sampler import _counters, vm_sample
from kvmkit.store.db import Store
from kvmkit.store.models import MetricPoint, MetricSeries

pytestmark = pytest.mark.fast
T0 = 1_800_000_000 // 3600 * 3600  # a whole hour, in 2027
TICK = 30


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (request.getfixturevalue("pg_cluster").new_database() if request.param == "postgresql"
           else f"sqlite:///{tmp_path}/kvmkit.db")
    s = Store(url)
    yield s
    s.engine.dispose()


def sample(i: int) -> Sample:
    """CPU cycles 0, 10, ... 90 % over ten ticks (one 5-minute bucket at 30 s ticks); memory grows."""
    return Sample(cpu_percent=(i % 10) * 10, mem_used_kib=1000 + i, mem_total_kib=4096, disk_rd=100,
                  disk_wr=(i % 2) * 10, net_rx=0, net_tx=50)


def run(history: History, start: int, end: int, vms: list[str], host: str = "h1") -> None:
    for ts in range(start, end, TICK):
        assert history.acquire(host, "me", ts, ttl=90, interval=TICK)
        i = (ts - T0) // TICK
        history.record(host, ts, {vm: sample(i) for vm in vms},
                       Sample(cpu_percent=50, mem_used_kib=10, mem_total_kib=20, ksm_saved_kib=2, vms_running=len(vms)))
        history.maintain(host, ts, grace=TICK + 5)


def counts(store: Store) -> dict[int, int]:
    with store.session() as s:
        rows = s.execute(select(MetricPoint.step, func.count()).group_by(MetricPoint.step)).all()
    return {int(step): int(n) for step, n in rows}


def test_rollups_retention_and_series(store: Store) -> None:
    history = History(store, raw_keep=3600, rollup_keep=3 * 3600)
    vms = ["a", "b", "c"]
    run(history, T0, T0 + 4 * 3600, vms)
    at_4h = counts(store)
    run(history, T0 + 4 * 3600, T0 + 5 * 3600, vms)
    at_5h = counts(store)
    # 4 series (3 VMs + the host): raw for the last hour, roll-ups for the last 3 hours (pruned every 5 minutes,
    # with the roll-up: up to 5 minutes more); no more rows after 5 h than after 4 h
    assert at_5h[0] <= 4 * ((3600 + ROLLUP) // TICK + 1) and at_5h[ROLLUP] <= 4 * (3 * 3600 // ROLLUP + 2)
    assert abs(at_5h[0] - at_4h[0]) <= 4 and abs(at_5h[ROLLUP] - at_4h[ROLLUP]) <= 4
    now = T0 + 5 * 3600
    with store.session() as s:
        oldest_raw = s.scalar(select(func.min(MetricPoint.ts)).where(MetricPoint.step == 0))
        oldest_rollup = s.scalar(select(func.min(MetricPoint.ts)).where(MetricPoint.step == ROLLUP))
    assert oldest_raw >= now - 3600 - ROLLUP - TICK and oldest_rollup >= now - 3 * 3600 - 2 * ROLLUP

    # a 5-minute roll-up: CPU averaged (0..90 -> 45) and its highest sample kept, memory the highest, rates averaged
    got = query.history(store, "vm", "a", since=str(now - 2 * 3600), until=str(now - 3600), step="5m",
                        now=now)
    assert got["resolution"] == ROLLUP and got["step"] == ROLLUP and len(got["timestamps"]) == 12
    values = {s["name"]: s["values"] for s in got["series"]}
    assert set(values["cpu_percent"]) == {45.0} and set(values["cpu_max_percent"]) == {90.0}
    assert set(values["disk_read_bytes_per_second"]) == {100.0} and set(values["disk_write_bytes_per_second"]) == {5.0}
    first = (now - 2 * 3600 - T0) // TICK
    assert values["memory_used_bytes"][0] == (1000 + first + 9) * 1024  # the highest of the bucket
    assert all(t % ROLLUP == 0 for t in got["timestamps"])

    # raw samples for a recent range and a fine step, bucketed by the step
    got = query.history(store, "vm", "b", since="30m", step="60", now=now)
    assert got["resolution"] == TICK and got["step"] == 60 and len(got["timestamps"]) == 30
    assert all(b - a == 60 for a, b in zip(got["timestamps"], got["timestamps"][1:], strict=False))

    # a long range in roll-ups reaches the newest minutes too (from raw samples not rolled up yet)
    got = query.history(store, "host", "h1", since="3h", step="30m", now=now + TICK)
    values = {s["name"]: s["values"] for s in got["series"]}
    assert got["timestamps"][-1] == now - 1800 and set(values["vms_running"]) == {3.0}
    assert set(values["ksm_saved_bytes"]) == {2048.0} and set(values["cpu_percent"]) == {50.0}

    # a VM no longer sampled: its points age out, then its series goes
    run(history, now, now + 4 * 3600, ["a"])
    with store.session() as s:
        names = set(s.scalars(select(MetricSeries.name)))
    assert names == {"a", "h1"}
    assert query.history(store, "vm", "b", since="1d", now=now + 4 * 3600)["timestamps"] == []


def test_one_server_per_host_holds_the_lease(store: Store) -> None:
    h = History(store)
    assert h.acquire("h1", "server-a", T0, ttl=30)
    assert h.acquire("h1", "server-a", T0 + 10, ttl=30)  # renewed
    assert not h.acquire("h1", "server-b", T0 + 20, ttl=30)
    assert h.acquire("h2", "server-b", T0 + 20, ttl=30)  # another host: its own lease
    assert h.acquire("h1", "server-b", T0 + 41, ttl=30)  # server-a stopped renewing: taken over
    assert not h.acquire("h1", "server-a", T0 + 42, ttl=30)
    h.release("h1", "server-b")  # a clean shutdown hands it on at once
    assert h.acquire("h1", "server-a", T0 + 43, ttl=30)


def test_a_restart_resets_the_rates_and_cpu_is_per_vcpu() -> None:
    def dom(cpu_s: float, rd: int, vcpus: int = 2) -> Domain:
        return Domain("vm", "u", {"state.state": 1, "cpu.time": int(cpu_s * 1e9), "vcpu.current": vcpus,
                                  "block.count": 1, "block.0.name": "vda", "block.0.rd.bytes": rd,
                                  "balloon.current": 4096, "balloon.rss": 1000})
    before = _counters(dom(10, 1000), at=100.0)
    now = _counters(dom(11, 3000), at=110.0)
    s = vm_sample(dom(11, 3000), now, before)
    assert s is not None and s.cpu_percent == pytest.approx(5.0) and s.disk_rd == pytest.approx(200)
    assert s.mem_used_kib == 1000 and s.mem_total_kib == 4096  # no guest statistics: the QEMU RSS
    assert vm_sample(dom(1, 3000), _counters(dom(1, 3000), at=110.0), before) is None  # counters went back
    assert vm_sample(dom(11, 3000), now, None) is None  # the first reading


def test_bad_query_parameters_are_422_with_a_hint(store: Store) -> None:
    for kw, field in (({"since": "yesterday"}, "since"), ({"step": "0"}, "step"), ({"since": "1h", "until": "2h"},
                                                                                    "until"),
                      ({"since": "30d", "step": "1"}, "step")):
        with pytest.raises(InvalidInput) as err:
            query.history(store, "vm", "a", **kw)
        assert field in str(err.value) and err.value.hint
