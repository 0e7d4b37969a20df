"""/api/v1/servers: the ``kvmkit serve`` processes sharing this database, as they see each other (admins)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from kvmkit.api.deps import require, state
from kvmkit.api.models.servers import ServerRow
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["servers"])


@router.get("/servers")
def list_servers(request: Request, _p: Principal = Depends(require("admin"))) -> list[ServerRow]:
    """Newest first; rows of servers that stopped or died are kept 30 days (task errors name them)."""
    from kvmkit.service.tasks.servers import listing

    st = state(request)
    return [ServerRow(**row) for row in listing(st.store, st.runner.server_id)]
