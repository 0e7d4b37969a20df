"""The spec of a VM import (``kvmkit vm import``, POST /api/v1/vms/import): the one way in for both."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from kvmkit.errors import InvalidInput
from kvmkit.spec.common import as_value_error, parse_size_mib, validate_name, validate_text

Via = Literal["auto", "kvmkit", "virt-v2v"]


class ImportSource(BaseModel):
    """What to import: a host file (``path``: admins only over the API) or a volume already in a pool
    (``pool`` + ``volume``: e.g. one uploaded with the volume upload API)."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    pool: str | None = None
    volume: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"source path {v!r} is not absolute; give the full path of the .ova, .ovf or disk")
        return None if v is None else as_value_error(validate_text, v, "source path", single_line=True)

    @field_validator("pool", "volume")
    @classmethod
    def _names(cls, v: str | None, info) -> str | None:
        return None if v is None else as_value_error(validate_name, v, f"source {info.field_name}")

    @model_validator(mode="after")
    def _one(self) -> ImportSource:
        if (self.path is None) == (self.volume is None):
            raise ValueError("give the source as either path=FILE or pool=P + volume=V")
        if self.volume is not None and self.pool is None:
            self.pool = "default"
        if self.path is not None and self.pool is not None:
            raise ValueError("a source path takes no pool; give path=FILE or pool=P + volume=V")
        return self


class ImportSpec(BaseModel):
    """An import: the source (OVA, OVF, or a VMDK/VHD/VHDX/VDI/QCOW2/raw disk) and how to make the VM."""

    model_config = ConfigDict(extra="forbid")

    source: ImportSource
    name: str | None = None          # default: the OVF's VirtualSystem name, else the file's name
    pool: str = "default"            # where the converted disks go
    os: str | None = None            # osinfo short id; default: what inspecting the guest finds
    network: str | None = "default"  # libvirt network for the NICs; None: no NIC
    via: Via = "auto"                # auto: virt-v2v where the guest needs converting, else kvmkit's own path
    virtio_win: str | None = None    # virtio-win ISO for virt-v2v to install Windows drivers from (host path)
    memory_mib: int | None = None    # default: the OVF's, else the OS's recommendation
    vcpus: int | None = None
    start: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_name, v, "VM name")

    @field_validator("pool", "network")
    @classmethod
    def _pool(cls, v: str | None, info) -> str | None:
        return None if v is None else as_value_error(validate_name, v, info.field_name)

    @field_validator("os")
    @classmethod
    def _os(cls, v: str | None) -> str | None:
        from kvmkit.spec.vm import validate_os

        return None if v is None else validate_os(v)

    @field_validator("virtio_win")
    @classmethod
    def _iso(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"virtio_win {v!r} is not an absolute path; give the full path of virtio-win.iso")
        return None if v is None else as_value_error(validate_text, v, "virtio_win", single_line=True)

    @field_validator("memory_mib", mode="before")
    @classmethod
    def _mem(cls, v: object) -> object:
        return None if v is None else as_value_error(parse_size_mib, v, "memory")  # type: ignore[arg-type]

    @field_validator("vcpus")
    @classmethod
    def _vcpus(cls, v: int | None) -> int | None:
        if v is not None and not 1 <= v <= 4096:
            raise ValueError(f"vcpus {v} is out of range; use 1-4096")
        return v


def parse_import(data: dict[str, object]) -> ImportSpec:
    """Validate an import spec, raising InvalidInput with one line naming the field and the fix."""
    from kvmkit.spec.vm import describe

    try:
        return ImportSpec.model_validate(data)
    except ValidationError as exc:
        message, hint = describe(exc)
        raise InvalidInput(message.replace("invalid VM spec", "invalid import"), hint) from exc
