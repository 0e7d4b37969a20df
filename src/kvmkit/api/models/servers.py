"""Typed answers of /api/v1/servers (routes/servers.py): what kvmkit.service.tasks.servers returns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvmkit.api.models.base import Out


class ServerRow(Out):
    id: str = Field(description="a new uuid for every process start")
    host: str = Field(description="the machine's host name (or KVMKIT_SERVER_HOST)")
    pid: int
    version: str | None
    state: Literal["up", "stopped", "dead"] = Field(
        description="up; stopped: shut down cleanly; dead: another server found it gone and took over its tasks")
    started_at: str
    heartbeat_at: str
    heartbeat_age_s: float = Field(description="seconds since its last heartbeat, by the database's clock")
    reaped_by: str | None = Field(description="the server that took over its tasks (state dead)")
    reaped_at: str | None
    this: bool = Field(description="the server answering this request")
