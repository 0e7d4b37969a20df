"""Typed answers of /healthz and /readyz (no token needed)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvmkit.api.models.base import Out


class Health(Out):
    status: Literal["ok"] = Field(description="the process answers")


class ReadyChecks(Out):
    libvirt: str = Field(description="ok, or why not (not answering within 5 s, unreachable: ...)")
    database: str = Field(description="ok, or why not")
    events: str = Field(description="connected or reconnecting (the libvirt event connection; not part of ready)")


class Ready(Out):
    ready: bool = Field(description="libvirt and the database answer (200); else 503 with the same body")
    checks: ReadyChecks
