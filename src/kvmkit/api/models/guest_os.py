"""Typed answers of /api/v1/os (routes/guest_os.py): what kvmkit.service.osinfo returns."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from kvmkit.api.models.base import Out


class OsSummary(Out):
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


class OsResources(Out):
    cpu_hz: int | None = None
    n_cpus: int | None = None
    ram: int | None = Field(None, description="bytes")
    storage: int | None = Field(None, description="bytes")


class OsFirmwareFeature(Out):
    name: str
    required: bool


class OsFirmware(Out):
    type: str
    supported: bool
    features: list[OsFirmwareFeature]


class OsDevice(Out):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    name: str | None = None
    device_class: str | None = Field(None, alias="class")


class OsVariant(Out):
    id: str
    name: str


class OsPreset(Out):
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


class OsRef(Out):
    """A VM's OS as its definition records it: the libosinfo entry, or only its id when this machine's
    database does not know it."""

    id: str
    short_id: str | None
    name: str | None
    version: str | None = None
    family: str | None = None
    distro: str | None = None
    release_date: str | None = None
    source: str | None
    source_name: str | None = None
    replaces: str | None = None
