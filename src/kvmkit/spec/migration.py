"""Migration specs: moving a VM to another host (``kvmkit vm migrate``), emptying a host (``host evacuate``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kvmkit.spec.common import as_value_error, validate_name

MigrationMode = Literal["live", "offline"]


class MigrateSpec(BaseModel):
    """Where and how to move one VM. ``mode`` None: live when the VM runs (or is paused), offline when shut off."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(description="the destination: a host name from the inventory (GET /api/v1/hosts)")
    mode: MigrationMode | None = Field(
        default=None, description="live (the VM keeps running) or offline (its definition and, with copy_storage, "
        "its disks); default: live when it runs")
    copy_storage: bool = Field(
        default=False, description="copy the VM's writable disks to the destination (they are not on storage both "
        "hosts share); the destination volumes are created first, at the same paths, in the destination's pools")
    bandwidth_mib: int | None = Field(default=None, ge=1, le=1_000_000,
                                      description="cap the migration stream at this many MiB/s")
    auto_converge: bool = Field(default=False, description="slow the guest's vCPUs down when its memory changes faster "
                                "than it can be sent (live only)")
    postcopy: bool = Field(default=False, description="switch to post-copy after the first pass over memory: the VM "
                           "runs on the destination while its remaining pages follow on demand (live only; a "
                           "failure after the switch can lose the VM's state)")

    @field_validator("to")
    @classmethod
    def _to(cls, v: str) -> str:
        return as_value_error(validate_name, v, "destination host")

    @model_validator(mode="after")
    def _live_only(self) -> MigrateSpec:
        if self.mode == "offline":
            used = [f for f in ("auto_converge", "postcopy") if getattr(self, f)]
            if self.bandwidth_mib is not None:
                used.append("bandwidth_mib")
            if used:
                raise ValueError(f"{', '.join(used)} apply to live migration only, not offline")
        return self


class EvacuateSpec(BaseModel):
    """How to empty a host: running VMs move live, shut-off VMs offline, each to the host placement picks."""

    model_config = ConfigDict(extra="forbid")

    copy_storage: bool = Field(default=False, description="copy the disks of VMs whose storage the other hosts do not "
                               "share (see MigrateSpec.copy_storage)")
    bandwidth_mib: int | None = Field(default=None, ge=1, le=1_000_000, description="per live migration, MiB/s")
    auto_converge: bool = False
    include_shut_off: bool = Field(default=True, description="also move the VMs that are shut off (offline)")
    to: list[str] | None = Field(default=None, description="only these hosts may receive VMs (default: every host "
                                 "placement accepts)")

    @field_validator("to")
    @classmethod
    def _to(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [as_value_error(validate_name, h, "destination host") for h in v]
