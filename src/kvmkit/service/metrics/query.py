"""Reading the history as named series (``GET /api/v1/vms/{name}/metrics``, ``GET /api/v1/host/metrics``)."""

from __future__ import annotations

import time
from typing import Any

from kvmkit.service.metrics.history import History
from kvmkit.spec.metrics import history_range

# stored column -> (series name, unit, factor to the unit)
VM_SERIES = [
    ("cpu", "cpu_percent", "percent", 0.01),
    ("cpu_max", "cpu_max_percent", "percent", 0.01),
    ("mem_used_kib", "memory_used_bytes", "bytes", 1024),
    ("mem_total_kib", "memory_total_bytes", "bytes", 1024),
    ("disk_rd", "disk_read_bytes_per_second", "bytes/s", 1),
    ("disk_wr", "disk_write_bytes_per_second", "bytes/s", 1),
    ("net_rx", "net_receive_bytes_per_second", "bytes/s", 1),
    ("net_tx", "net_transmit_bytes_per_second", "bytes/s", 1),
]
HOST_SERIES = [*VM_SERIES, ("ksm_saved_kib", "ksm_saved_bytes", "bytes", 1024),
               ("vms_running", "vms_running", "count", 1)]


def history(store: Any, kind: str, name: str, *, since: str | None = None, until: str | None = None,
            step: str | None = None, host: str | None = None, now: float | None = None) -> dict[str, Any]:
    """``{"kind", "name", "since", "until", "step", "resolution", "timestamps", "series": [{"name", "unit",
    "values"}]}``: the values of each series line up with ``timestamps`` (None where a bucket lacks one)."""
    now = time.time() if now is None else now
    r = history_range(since, until, step, now)
    found = History(store).query(kind, name, since=r.since, until=r.until, step=r.step, now=int(now), host=host)
    spec = VM_SERIES if kind == "vm" else HOST_SERIES
    series = [{"name": label, "unit": unit,
               "values": [None if v is None else round(v * factor, 2) for v in found.values[column]]}
              for column, label, unit, factor in spec]
    return {"kind": kind, "name": name, "since": r.since, "until": r.until, "step": found.step,
            "resolution": found.resolution, "timestamps": found.timestamps, "series": series}


def known(store: Any, kind: str, name: str) -> bool:
    """True when the history holds any series of ``name``."""
    return History(store).known(kind, name)
