"""/api/v1/audit: the audit log (admins only), newest first."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from kvmkit.api.deps import require, state
from kvmkit.api.models.access import AuditEntry
from kvmkit.service.access import audit
from kvmkit.service.access.auth import Principal

router = APIRouter(tags=["audit"])


@router.get("/audit", response_model=list[AuditEntry])
def list_audit(request: Request, limit: int = Query(100, ge=1, le=1000), user: str | None = Query(None, max_length=64),
               action: str | None = Query(None, max_length=64), target: str | None = Query(None, max_length=128),
               _p: Principal = Depends(require("admin"))) -> list[dict[str, Any]]:
    return audit.entries(state(request).store, limit=limit, user=user, action=action, target=target)
