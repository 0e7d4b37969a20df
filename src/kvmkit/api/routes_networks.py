"""/api/v1/networks: virtual networks (viewers read; admins start and stop)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from kvmkit.api.deps import require, require_unrestricted, state
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/networks", tags=["networks"])


@router.get("")
def list_networks(request: Request, p: Principal = Depends(require("viewer"))) -> list[dict[str, Any]]:
    from kvmkit.service.net import networks
    require_unrestricted(p, "list networks")
    return networks.list_networks(state(request).hv.get())


@router.get("/{name}", responses={404: {"description": "no such network"}})
def show_network(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> dict[str, Any]:
    from kvmkit.service.net import networks
    require_unrestricted(p, "read networks")
    return networks.show_network(state(request).hv.get(), name)


@router.post("/{name}/actions/{action}", responses={404: {"description": "no such network"},
                                                    409: {"description": "wrong state or in use"}})
def network_action(name: str, action: Literal["start", "stop"], request: Request,
                   _p: Principal = Depends(require("admin"))) -> dict[str, Any]:
    from kvmkit.service.net import networks
    conn = state(request).hv.get()
    return networks.start(conn, name) if action == "start" else networks.stop(conn, name)
