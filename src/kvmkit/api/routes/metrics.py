"""Metrics: ``GET /metrics`` (Prometheus text, on the main listener, token needed) and the history for charts,
``GET /api/v1/vms/{name}/metrics`` and ``GET /api/v1/host/metrics``.

``/metrics`` covers every VM and the host, so it is for callers who may see them all (any role, not a
delegated user); delegated users read the history of their own VMs.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from pydantic import Field

from kvmkit.api.deps import check_vm_visible, require, require_unrestricted, state
from kvmkit.api.models.base import Out
from kvmkit.api.state import ServerState
from kvmkit.errors import NotFound
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["metrics"])  # under /api/v1
scrape_router = APIRouter(tags=["metrics"])  # /metrics, where Prometheus looks by default

SINCE = Query(None, description="start: a duration back from now (30m, 6h, 7d), an ISO 8601 time or epoch "
                                "seconds; default 1h")
UNTIL = Query(None, description="end (same forms as since); default now")
STEP = Query(None, description="bucket width: 10s, 5m, 1h or seconds; default about 360 points over the range")


class MetricSeries(Out):
    name: str = Field(description="e.g. cpu_percent, memory_used_bytes, disk_read_bytes_per_second")
    unit: str = Field(description="percent, bytes, bytes/s or count")
    values: list[float | None] = Field(description="one value per timestamp (null: no value in that bucket)")


class MetricsHistory(Out):
    kind: Literal["vm", "host"]
    name: str
    since: int = Field(description="start of the range, seconds since the epoch")
    until: int = Field(description="end of the range (exclusive), seconds since the epoch")
    step: int = Field(description="seconds per bucket (at least the resolution)")
    resolution: int = Field(description="seconds between the stored points read: the sampling interval "
                                        "(raw samples, last 24 h) or 300 (5-minute roll-ups, 30 days)")
    timestamps: list[int] = Field(description="bucket starts with data, seconds since the epoch, ascending")
    series: list[MetricSeries]


def _exporter(st: ServerState):  # type: ignore[no-untyped-def]
    if st.exporter is None:
        from kvmkit.service.metrics.exporter import Exporter, task_counts

        st.exporter = Exporter(st.hv.get, requests=st.requests, tasks=lambda: task_counts(st.store))
    return st.exporter


@scrape_router.get("/metrics", response_class=Response,
                   responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                                    "description": "Prometheus text exposition format 0.0.4"}})
def scrape(request: Request, p: Principal = Depends(require("viewer"))) -> Response:
    """Every VM's counters (libvirt exporter names, one bulk libvirt call), the host's CPU, memory, KSM and
    huge pages, VM counts by state, API requests and tasks: read now, at the scrape."""
    require_unrestricted(p, "read /metrics (it covers every VM and the host)")
    from kvmkit.service.metrics.exporter import render

    body, content_type = render(_exporter(state(request)))
    return Response(body, media_type=content_type)


@router.get("/vms/{name}/metrics", responses={404: {"description": "no such VM (or not delegated to you)"}})
def vm_metrics(name: str, request: Request, since: str | None = SINCE, until: str | None = UNTIL,
               step: str | None = STEP, p: Principal = Depends(require("viewer"))) -> MetricsHistory:
    """The VM's history: CPU (percent of its vCPUs; average and highest), memory used and total, disk read
    and write and network receive and transmit in bytes per second."""
    from kvmkit.service.metrics import query

    check_vm_visible(p, name)
    st = state(request)
    if not query.known(st.store, "vm", name):
        from kvmkit.service.vms.domains import domain

        domain(st.hv.get(), name)  # 404 for a VM that neither exists nor has a history
    return MetricsHistory.model_validate(query.history(st.store, "vm", name, since=since, until=until, step=step))


@router.get("/host/metrics", responses={403: {"description": "delegated users see only their VMs"},
                                         404: {"description": "no history for that host"}})
def host_metrics(request: Request, since: str | None = SINCE, until: str | None = UNTIL, step: str | None = STEP,
                 host: str | None = Query(None, description="host name (default: this server's libvirt host)"),
                 p: Principal = Depends(require("viewer"))) -> MetricsHistory:
    """The host's history: CPU (percent of all CPUs), memory used (total - available) and total, the VMs'
    disk and network rates summed, memory KSM saves and running VMs."""
    from kvmkit.service.metrics import query

    require_unrestricted(p, "read the host's metrics")
    st = state(request)
    name = host or _exporter(st).host_name()
    if host is not None and not query.known(st.store, "host", host):
        raise NotFound(f"no metrics history for host '{host}'",
                       hint="leave out host= for this server's host, or give a host this server samples")
    return MetricsHistory.model_validate(query.history(st.store, "host", name, since=since, until=until, step=step))
