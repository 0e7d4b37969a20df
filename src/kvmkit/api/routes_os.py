"""/api/v1/os: the guest OSes kvmkit knows (libosinfo's database + kvmkit's overlay); viewers read.

The twins of ``kvmkit os list [--family F]`` and ``kvmkit os show NAME``. A VM create body takes the OS as
the spec's ``os`` field (and ``virtio_win``, a host path: admins only)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from kvmkit.api.deps import require
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/os", tags=["os"])


class OsSummary(BaseModel):
    id: str
    short_id: str
    name: str
    version: str | None = None
    family: str | None = None
    distro: str | None = None
    release_date: str | None = None
    source: str = Field(description="system | kvmkit | local | user: the database location of the entry")
    source_name: str
    replaces: str | None = Field(None, description="the source of an entry with the same id this one replaces")


class OsResources(BaseModel):
    cpu_hz: int | None = None
    n_cpus: int | None = None
    ram: int | None = Field(None, description="bytes")
    storage: int | None = Field(None, description="bytes")


class OsFirmwareFeature(BaseModel):
    name: str
    required: bool


class OsFirmware(BaseModel):
    type: str
    supported: bool
    features: list[OsFirmwareFeature]


class OsDevice(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    name: str | None = None
    device_class: str | None = Field(None, alias="class")


class OsVariant(BaseModel):
    id: str
    name: str


class OsPreset(BaseModel):
    windows: bool
    virtio: bool
    disk_bus: str
    nic_model: str
    machine: str | None = None
    uefi_required: bool
    uefi_supported: bool
    secure_boot: bool
    tpm: bool
    rng: bool
    graphics: bool
    memory_mib: int | None = None
    min_memory_mib: int | None = None
    recommended_memory_mib: int | None = None
    vcpus: int | None = None
    min_vcpus: int | None = None
    recommended_vcpus: int | None = None
    min_disk_bytes: int | None = None
    recommended_disk_bytes: int | None = None


class OsDetail(OsSummary):
    requested: str
    fallback: bool = Field(description="the requested release is unknown: this is the nearest known one")
    message: str | None = None
    short_ids: list[str]
    vendor: str | None = None
    codename: str | None = None
    eol_date: str | None = None
    path: str
    derives_from: list[str]
    upgrades: list[str]
    inherits_from: list[str]
    devices: list[OsDevice]
    resources: dict[str, OsResources] = Field(description="minimum, recommended, maximum, network-install")
    firmware: list[OsFirmware]
    variants: list[OsVariant]
    preset: OsPreset


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
