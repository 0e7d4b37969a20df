"""/api/v1/servers: the ``kvmkit serve`` processes sharing this database, as they see each other (admins)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from kvmkit.api.deps import require, state
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["servers"])


class ServerRow(BaseModel):
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


@router.get("/servers")
def list_servers(request: Request, _p: Principal = Depends(require("admin"))) -> list[ServerRow]:
    """Newest first; rows of servers that stopped or died are kept 30 days (task errors name them)."""
    from kvmkit.service.tasks.servers import listing

    st = state(request)
    return [ServerRow(**row) for row in listing(st.store, st.runner.server_id)]
