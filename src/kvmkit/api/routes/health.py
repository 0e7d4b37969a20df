"""/healthz (the process answers) and /readyz (libvirt and the database answer). No token needed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from kvmkit.api.models.health import Health, Ready

router = APIRouter(tags=["health"])


PROBE_TIMEOUT_S = 5.0


def _probe(fn: Any) -> str:
    """'ok', or why not; a daemon that does not answer within 5 s counts as not ready."""
    import concurrent.futures

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(fn).result(timeout=PROBE_TIMEOUT_S)
        return "ok"
    except concurrent.futures.TimeoutError:
        return f"not answering within {PROBE_TIMEOUT_S:.0f} s"
    except Exception as err:
        return f"unreachable: {err}"
    finally:
        pool.shutdown(wait=False)


@router.get("/healthz", response_model=Health)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={200: {"model": Ready, "description": "libvirt and the database answer"},
                                  503: {"model": Ready, "description": "libvirt or the database is not reachable"}})
def readyz(request: Request) -> Any:
    from kvmkit.store.db import check

    st = request.app.state.kvmkit
    checks = {"libvirt": _probe(lambda: st.hv.get().getLibVersion()),
              "database": _probe(lambda: check(st.store.engine))}
    checks["events"] = "connected" if st.hub.connected else "reconnecting"
    ready = checks["libvirt"] == "ok" and checks["database"] == "ok"
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
