"""/api/v1/pools: storage pools (viewers read; admins start, stop and refresh)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from kvmkit.api.deps import require, require_unrestricted, state
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/pools", tags=["pools"])


@router.get("")
def list_pools(request: Request, p: Principal = Depends(require("viewer"))) -> list[dict[str, Any]]:
    from kvmkit.service.storage import pools
    require_unrestricted(p, "list storage pools")
    return pools.list_pools(state(request).hv.get())


@router.get("/{name}", responses={404: {"description": "no such pool"}})
def show_pool(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> dict[str, Any]:
    from kvmkit.service.storage import pools
    require_unrestricted(p, "read storage pools")
    return pools.pool_info(state(request).hv.get(), name)


@router.post("/{name}/actions/{action}", responses={404: {"description": "no such pool"},
                                                    409: {"description": "wrong state"}})
def pool_action(name: str, action: Literal["start", "stop", "refresh"], request: Request,
                _p: Principal = Depends(require("admin"))) -> dict[str, Any]:
    from kvmkit.service.storage import pools
    fn = {"start": pools.start_pool, "stop": pools.stop_pool, "refresh": pools.refresh_pool}[action]
    return fn(state(request).hv.get(), name)
