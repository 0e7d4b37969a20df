"""``kvmkit vm metrics NAME``: the VM's history for charts, as ``GET /api/v1/vms/{name}/metrics`` answers it.

The history is recorded by ``kvmkit serve`` (its sampler) into the server's database; this command reads
that database (``--db``, like ``kvmkit user``).
"""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.db_option import DB, open_store

SINCE = typer.Option(None, "--since", help="start: 30m, 6h, 7d (back from now), ISO 8601 or epoch seconds; "
                                           "default 1h")
UNTIL = typer.Option(None, "--until", help="end, same forms as --since; default now")
STEP = typer.Option(None, "--step", help="bucket width: 10s, 5m, 1h; default about 360 points")
COLUMNS = [("cpu_percent", "cpu%", 1, "{:.1f}"), ("memory_used_bytes", "mem_mib", 2**20, "{:.0f}"),
           ("disk_read_bytes_per_second", "rd_kib/s", 1024, "{:.1f}"),
           ("disk_write_bytes_per_second", "wr_kib/s", 1024, "{:.1f}"),
           ("net_receive_bytes_per_second", "rx_kib/s", 1024, "{:.1f}"),
           ("net_transmit_bytes_per_second", "tx_kib/s", 1024, "{:.1f}")]


def show(data: dict[str, Any]) -> None:
    """A table: one line per bucket (local time), the series charts use most."""
    from datetime import datetime

    from kvmkit.cli.output import console, table

    if not data["timestamps"]:
        console().print(f"no samples of {data['kind']} {data['name']} in this range (the history is recorded "
                        "by a running `kvmkit serve` on the same --db)")
        return
    values = {s["name"]: s["values"] for s in data["series"]}
    rows = []
    for i, ts in enumerate(data["timestamps"]):
        row: dict[str, str | None] = {"time": datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")}
        for series, label, scale, fmt in COLUMNS:
            value = values[series][i]
            row[label] = None if value is None else fmt.format(value / scale)
        rows.append(row)
    table(rows, ["time", *(c[1] for c in COLUMNS)],
          title=f"{data['kind']} {data['name']}: step {data['step']} s, resolution {data['resolution']} s")


def register(app: typer.Typer) -> None:
    @app.command()
    def metrics(name: str = typer.Argument(..., help="VM name"), since: str | None = SINCE,
                until: str | None = UNTIL, step: str | None = STEP, db: str | None = DB) -> None:
        """The VM's CPU, memory, disk and network history (sampled by kvmkit serve every 10 s; 24 h of raw
        samples, 30 days of 5-minute points)."""
        from kvmkit.cli.context import connection
        from kvmkit.cli.output import emit
        from kvmkit.service.metrics import query
        from kvmkit.service.vms.domains import domain

        store = open_store(db)
        if not query.known(store, "vm", name):
            domain(connection(), name)  # not found: neither a VM nor a history of that name
        emit(query.history(store, "vm", name, since=since, until=until, step=step), show)
