"""The metrics history for charts: storing samples, rolling them up, deleting old ones, and reading series.

Two resolutions, both in ``metric_points``:

- raw samples (``step`` 0), one row per VM (and one per host) per sampling interval (10 s by default), kept
  ``RAW_KEEP`` (24 h);
- 5-minute roll-ups (``step`` 300) made from them once a 5-minute bucket has closed, kept ``ROLLUP_KEEP``
  (30 days): CPU averaged (and its highest raw sample kept as ``cpu_max``), memory the highest, byte rates
  averaged (an average of rates over a window is the counter's rate over that window).

:meth:`History.maintain` rolls up closed buckets and deletes what is past its retention in the same
transaction, so the database holds at most 24 h of raw samples and 30 days of roll-ups: it stops growing.

Only one server samples a host (several may share a PostgreSQL database): the owner of the host's row in
``metric_leases`` (:meth:`History.acquire`, renewed every interval, taken over once it expired).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Select,
    Table,
    and_,
    delete,
    exists,
    false,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError

from kvmkit.store.models import MetricLease, MetricPoint, MetricSeries

RAW = 0
ROLLUP = 300
RAW_KEEP = 24 * 3600
ROLLUP_KEEP = 30 * 86400
POINTS = cast(Table, MetricPoint.__table__)
SERIES = cast(Table, MetricSeries.__table__)
LEASES = cast(Table, MetricLease.__table__)
P = POINTS.c
VALUES = ("cpu", "cpu_max", "mem_used_kib", "mem_total_kib", "disk_rd", "disk_wr", "net_rx", "net_tx",
          "ksm_saved_kib", "vms_running")
AVERAGED = ("cpu", "disk_rd", "disk_wr", "net_rx", "net_tx", "vms_running")  # the others: the highest


@dataclass
class Sample:
    """One sample of one series in natural units (None: not known this time)."""

    cpu_percent: float | None = None
    mem_used_kib: int | None = None
    mem_total_kib: int | None = None
    disk_rd: float | None = None  # bytes/s
    disk_wr: float | None = None
    net_rx: float | None = None
    net_tx: float | None = None
    ksm_saved_kib: int | None = None
    vms_running: int | None = None

    def row(self, series_id: int, ts: int) -> dict[str, Any]:
        def n(v: float | None, scale: float = 1) -> int | None:
            return None if v is None else round(v * scale)

        return {"series_id": series_id, "step": RAW, "ts": ts, "cpu": n(self.cpu_percent, 100), "cpu_max": None,
                "mem_used_kib": self.mem_used_kib, "mem_total_kib": self.mem_total_kib, "disk_rd": n(self.disk_rd),
                "disk_wr": n(self.disk_wr), "net_rx": n(self.net_rx), "net_tx": n(self.net_tx),
                "ksm_saved_kib": self.ksm_saved_kib, "vms_running": self.vms_running}


@dataclass
class Series:
    """Points of one object: ``timestamps`` (bucket starts, seconds since the epoch) and one list of values per
    field, None where a bucket had no value for it."""

    step: int
    resolution: int  # seconds between the stored points read (the sampling interval, or 300)
    timestamps: list[int] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(default_factory=dict)


def _bucket(ts: Any, step: int) -> Any:
    """The start of ``ts``'s bucket of ``step`` seconds. The step is written into the SQL (an integer, never
    user text): as a bound parameter PostgreSQL would not see the GROUP BY expression as the selected one."""
    width = literal_column(str(int(step)), BigInteger)
    return ts - ts % width


def _aggregates(step: int, source: Any) -> list[Any]:
    """Columns that roll ``source`` rows up into buckets of ``step`` seconds."""
    c = source.c
    cols = [c.series_id, _bucket(c.ts, step).label("ts")]
    for name in VALUES:
        col = c[name]
        if name == "cpu_max":
            agg: Any = func.max(func.coalesce(c.cpu_max, c.cpu))
        elif name in AVERAGED:
            agg = func.round(func.avg(col))
        else:
            agg = func.max(col)
        cols.append(agg.label(name))
    return cols


def _rollup_select(step: int, where: Any) -> Select[Any]:
    table = POINTS
    return select(*_aggregates(step, table)).where(where).group_by(P.series_id, _bucket(P.ts, step))


class History:
    def __init__(self, store: Any, *, raw_keep: int = RAW_KEEP, rollup_keep: int = ROLLUP_KEEP) -> None:
        self.store = store
        self.raw_keep = raw_keep
        self.rollup_keep = rollup_keep
        self._ids: dict[tuple[str, str, str], int] = {}

    # leases -----------------------------------------------------------------------------------------
    def acquire(self, host: str, owner: str, now: int, ttl: int, interval: int = 10) -> bool:
        """Take or renew the right to sample ``host`` (every ``interval`` seconds) until ``now + ttl``; False
        while another owner holds it."""
        lease = LEASES
        with self.store.session() as s:
            done = s.execute(update(lease).where(lease.c.host == host,
                                                 or_(lease.c.owner == owner, lease.c.expires_at < now))
                             .values(owner=owner, expires_at=now + ttl, interval=interval))
            if done.rowcount:  # type: ignore[attr-defined]
                return True
            try:
                with s.begin_nested():
                    s.execute(insert(lease).values(host=host, owner=owner, expires_at=now + ttl, interval=interval))
            except IntegrityError:
                return False  # held by another server
        return True

    def release(self, host: str, owner: str) -> None:
        """Give the lease up (at shutdown), so another server may sample the host at once."""
        lease = LEASES
        with self.store.session() as s:
            s.execute(update(lease).where(lease.c.host == host, lease.c.owner == owner).values(expires_at=0))

    # writing ----------------------------------------------------------------------------------------
    def series_ids(self, s: Any, kind: str, host: str, names: Iterable[str]) -> dict[str, int]:
        """Numbers of the series of ``names`` (made where missing)."""
        wanted = set(names)
        out = {n: self._ids[(kind, host, n)] for n in wanted if (kind, host, n) in self._ids}
        missing = wanted - out.keys()
        if missing:
            table = SERIES
            query = select(table.c.name, table.c.id).where(table.c.kind == kind, table.c.host == host)
            found = {n: i for n, i in s.execute(query.where(table.c.name.in_(sorted(missing))))}
            new = sorted(missing - found.keys())
            if new:
                s.execute(insert(table), [{"kind": kind, "host": host, "name": n} for n in new])
                found.update((n, i) for n, i in s.execute(query.where(table.c.name.in_(new))))
            for name, number in found.items():
                self._ids[(kind, host, name)] = number
            out.update(found)
        return out

    def record(self, host: str, ts: int, vms: dict[str, Sample], host_sample: Sample | None = None) -> int:
        """Store one raw sample per VM (and one for the host) taken at ``ts``; returns the rows written."""
        with self.store.session() as s:
            rows = []
            if vms:
                ids = self.series_ids(s, "vm", host, vms)
                rows = [sample.row(ids[name], ts) for name, sample in vms.items()]
            if host_sample is not None:
                rows.append(host_sample.row(self.series_ids(s, "host", host, [host])[host], ts))
            if rows:
                s.execute(insert(POINTS), rows)
        return len(rows)

    def maintain(self, host: str, now: int, grace: int = 15) -> dict[str, int]:
        """Roll up every 5-minute bucket of ``host`` closed by ``now - grace`` and not yet rolled up, then delete
        raw samples older than ``raw_keep`` and roll-ups older than ``rollup_keep`` (and series left empty).
        The caller holds the host's lease. Cheap when no bucket closed since the last call."""
        upto = (now - grace) // ROLLUP * ROLLUP
        series, lease = SERIES, LEASES
        with self.store.session() as s:
            rolled = s.execute(select(lease.c.rolled_until).where(lease.c.host == host)).scalar()
            mine = select(series.c.id).where(series.c.host == host).scalar_subquery()
            if rolled is None:
                first = s.execute(select(func.min(P.ts)).where(P.series_id.in_(mine), P.step == RAW)).scalar()
                rolled = upto if first is None else int(first) // ROLLUP * ROLLUP
            if upto <= rolled:
                return {"rolled": 0}
            table = POINTS
            window = and_(P.series_id.in_(mine), P.ts >= rolled, P.ts < upto)
            s.execute(delete(table).where(window, P.step == ROLLUP))  # none, unless rolled_until was reset
            made = s.execute(insert(table).from_select(
                ["series_id", "ts", *VALUES, "step"],
                select(*_rollup_select(ROLLUP, and_(window, P.step == RAW)).subquery().c, literal(ROLLUP))))
            s.execute(update(lease).where(lease.c.host == host).values(rolled_until=upto))
            old_raw = s.execute(delete(table).where(P.series_id.in_(mine), P.step == RAW,
                                                    P.ts < now - self.raw_keep))
            old_rollups = s.execute(delete(table).where(P.series_id.in_(mine), P.step == ROLLUP,
                                                        P.ts < now - self.rollup_keep))
            empty = s.execute(delete(series).where(series.c.host == host,
                                                   ~exists().where(P.series_id == series.c.id)))
            if empty.rowcount:  # type: ignore[attr-defined]
                self._ids.clear()
        return {"rolled": made.rowcount, "deleted_raw": old_raw.rowcount,  # type: ignore[attr-defined]
                "deleted_rollups": old_rollups.rowcount, "deleted_series": empty.rowcount}  # type: ignore[attr-defined]

    # reading ----------------------------------------------------------------------------------------
    def known(self, kind: str, name: str) -> bool:
        series = SERIES
        with self.store.session() as s:
            return s.execute(select(series.c.id).where(series.c.kind == kind, series.c.name == name)
                             .limit(1)).first() is not None

    def query(self, kind: str, name: str, *, since: int, until: int, step: int, now: int,
              host: str | None = None) -> Series:
        """Points of ``kind``/``name`` (on every host it was sampled on, or only ``host``) in ``[since, until)``
        in buckets of ``step`` seconds: raw samples while the range lies within the raw retention and the step
        is finer than 5 minutes, else roll-ups (the newest, not yet rolled-up minutes from raw samples). The
        resolution of raw samples is the sampling interval their hosts' samplers recorded in the lease."""
        series, lease = SERIES, LEASES
        with self.store.session() as s:
            query = select(series.c.id, series.c.host, lease.c.rolled_until, lease.c.interval).outerjoin(
                lease, lease.c.host == series.c.host).where(series.c.kind == kind, series.c.name == name)
            if host is not None:
                query = query.where(series.c.host == host)
            found = s.execute(query).all()
            use_raw = step < ROLLUP and since >= now - self.raw_keep
            resolution = max((r.interval or 10 for r in found), default=10) if use_raw else ROLLUP
            step = max(step, resolution) if use_raw else max(step, ROLLUP) // ROLLUP * ROLLUP
            out = Series(step=step, resolution=resolution, values={v: [] for v in VALUES})
            if not found:
                return out
            in_range = and_(P.ts >= since, P.ts < until)
            if use_raw:
                source: Any = select(POINTS).where(
                    P.series_id.in_([r.id for r in found]), P.step == RAW, in_range).subquery()
            else:
                raw_parts, rolled_parts = [], []
                for r in found:  # rolled-up buckets from roll-ups, newer ones from raw samples
                    edge = r.rolled_until if r.rolled_until is not None else 0
                    raw_parts.append(and_(P.series_id == r.id, P.ts >= edge))
                    rolled_parts.append(and_(P.series_id == r.id, P.ts < edge))
                recent = _rollup_select(ROLLUP, and_(P.step == RAW, in_range, or_(false(), *raw_parts)))
                stored = select(P.series_id, P.ts, *(P[v] for v in VALUES)).where(
                    P.step == ROLLUP, in_range, or_(false(), *rolled_parts))
                source = union_all(recent, stored).subquery()
            cols = _aggregates(step, source)[1:]  # bucket and values, merged over series
            rows = s.execute(select(*cols).group_by(cols[0]).order_by(cols[0])).all()
        for row in rows:
            out.timestamps.append(int(row[0]))
            for name, value in zip(VALUES, row[1:], strict=True):
                out.values[name].append(None if value is None else float(value))
        return out
