"""/healthz (the process answers) and /readyz (libvirt and the database answer). No token needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "libvirt or the database is not reachable"}})
def readyz(request: Request) -> Any:
    from kvmkit.store.db import check

    st = request.app.state.kvmkit
    checks: dict[str, str] = {}
    try:
        st.hv.get().getLibVersion()
        checks["libvirt"] = "ok"
    except Exception as err:
        checks["libvirt"] = f"unreachable: {err}"
    try:
        check(st.store.engine)
        checks["database"] = "ok"
    except Exception as err:
        checks["database"] = f"unreachable: {type(err).__name__}"
    checks["events"] = "connected" if st.hub.connected else "reconnecting"
    ready = checks["libvirt"] == "ok" and checks["database"] == "ok"
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
