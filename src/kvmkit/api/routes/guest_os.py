"""/api/v1/os: the guest OSes kvmkit knows (libosinfo's database + kvmkit's overlay); viewers read.

The twins of ``kvmkit os list [--family F]`` and ``kvmkit os show NAME``. A VM create body takes the OS as
the spec's ``os`` field (and ``virtio_win``, a host path: admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from kvmkit.api.deps import require
from kvmkit.api.models.guest_os import (
    OsDetail,
    OsSummary,
)
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/os", tags=["os"])


@router.get("", response_model=list[OsSummary])
def list_os(family: str | None = Query(None, description="only this family or distro (linux, winnt, debian ...)"),
            _p: Principal = Depends(require("viewer"))) -> list[OsSummary]:
    """Every OS known, with the database location its entry came from."""
    from kvmkit.service.osinfo.lookup import list_os as rows

    return [OsSummary.model_validate(r) for r in rows(family)]


@router.get("/{name}", response_model=OsDetail, responses={404: {"description": "unknown OS (no release of that "
                                                                              "series is known either)"}})
def show_os(name: str, _p: Principal = Depends(require("viewer"))) -> OsDetail:
    """One OS: its entry, devices, resources, firmware and the preset ``os`` applies to a VM create."""
    from kvmkit.service.osinfo.catalog import show_os as show

    return OsDetail.model_validate(show(name))
