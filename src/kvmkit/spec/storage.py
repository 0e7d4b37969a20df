"""Storage specs: what a pool, a volume, a clone, a template or an image job is, validated once at the edge.

The field names are the CLI's flags (``kvmkit pool define --source-host`` -> ``source_host``), so the API
bodies read like the commands. The service functions (kvmkit.service.storage) check again what only
libvirt or the pool can tell (a name in use, free space, a pool type's required source).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from kvmkit.spec.common import as_value_error, parse_size_bytes, validate_name, validate_text

PoolType = Literal["dir", "fs", "netfs", "logical", "iscsi"]
VolumeFormat = Literal["qcow2", "raw"]
ReadFormat = Literal["qcow2", "raw", "vmdk", "vpc", "vhdx", "vdi"]
MAX_SIZE = 1024 ** 5  # 1 PiB: past any pool; the pool's free space is checked by the service


def _size(value: str | int, what: str) -> str:
    """A size as the CLI takes it ('10G', '512M', '1GiB', a bare number = MiB), checked and kept as text so
    the service reads it exactly as it reads the CLI's flag."""
    text = str(value)
    size = as_value_error(parse_size_bytes, text, what)
    if size > MAX_SIZE:
        raise ValueError(f"{what}: {text!r} is larger than 1 PiB; choose a size the pool can hold")
    return text


def _path(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    as_value_error(validate_text, value, what, single_line=True, max_len=4096)
    if not value.startswith("/"):
        raise ValueError(f"{what} {value!r} must be an absolute path")
    return value


def _plain(value: str | None, what: str) -> str | None:
    return None if value is None else as_value_error(validate_text, value, what, single_line=True, max_len=1024)


class PoolSpec(BaseModel):
    """``kvmkit pool define NAME --type T --target DIR [--source-...] [--build] [--start] [--autostart]``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="pool name")
    type: PoolType = Field(description="dir | fs | netfs | logical | iscsi")
    target: str | None = Field(None, description="directory (dir, fs, netfs) or device directory (absolute)")
    source_dev: str | None = Field(None, description="fs: block device; logical: PV device; iscsi: target IQN")
    source_host: str | None = Field(None, description="netfs/iscsi: server host name")
    source_path: str | None = Field(None, description="netfs: exported directory; iscsi: target IQN")
    source_name: str | None = Field(None, description="logical: volume group name (default: the pool name)")
    source_format: str | None = Field(None, description="fs: ext4 (default), xfs, auto; netfs: nfs (default), cifs")
    build: bool = Field(False, description="also build it (mkdir, mkfs, vgcreate)")
    overwrite: bool = Field(False, description="build: format the device even if it holds data")
    start: bool = Field(False, description="also start it")
    autostart: bool = Field(False, description="also start it with libvirtd")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return as_value_error(validate_name, v, "pool name")

    @field_validator("target")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        return _path(v, "target")

    @field_validator("source_dev", "source_host", "source_path", "source_name", "source_format")
    @classmethod
    def _text(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _plain(v, info.field_name or "field")


class VolumeSpec(BaseModel):
    """``kvmkit volume create POOL NAME --size S [--format F] [--preallocation full] [--backing VOL]``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="volume name: a file name, no '/' or '..'")
    size: str | int = Field(description="e.g. 10G, 512M, 1GiB; a bare number is MiB")
    format: VolumeFormat = "qcow2"
    preallocation: Literal["off", "full"] | None = Field(None, description="full: allocate all space now")
    backing: str | None = Field(None, description="a volume of the same pool backing this qcow2 volume")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return as_value_error(validate_name, v, "volume name")

    @field_validator("size")
    @classmethod
    def _size(cls, v: str | int) -> str:
        return _size(v, "size")

    @field_validator("backing")
    @classmethod
    def _backing(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_name, v, "backing volume name")


class CloneSpec(BaseModel):
    """``kvmkit volume clone POOL SRC NEW [--linked]``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the new volume's name")
    linked: bool = Field(False, description="a qcow2 overlay backed by the source instead of a copy")
    pool: str | None = Field(None, description="pool of the new volume (default: the source's)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return as_value_error(validate_name, v, "volume name")

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_name, v, "pool name")


class ResizeSpec(BaseModel):
    """``kvmkit volume resize POOL NAME SIZE [--allow-shrink]``."""

    model_config = ConfigDict(extra="forbid")

    capacity: str | int = Field(description="the new size, e.g. 20G; a bare number is MiB")
    allow_shrink: bool = Field(False, description="allow a smaller size (data past the new end is lost)")

    @field_validator("capacity")
    @classmethod
    def _capacity(cls, v: str | int) -> str:
        return _size(v, "capacity")


class TemplateSpec(BaseModel):
    """``kvmkit template mark POOL VOLUME [--name T] [--description D]``."""

    model_config = ConfigDict(extra="forbid")

    pool: str
    volume: str
    name: str | None = Field(None, description="template name (default: the volume's name)")
    description: str = ""

    @field_validator("pool", "volume")
    @classmethod
    def _names(cls, v: str, info: ValidationInfo) -> str:
        return as_value_error(validate_name, v, info.field_name or "name")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_name, v, "template name")

    @field_validator("description")
    @classmethod
    def _description(cls, v: str) -> str:
        return as_value_error(validate_text, v, "description", max_len=1024)


class ProvisionSpec(BaseModel):
    """``kvmkit template provision T NEW_VOLUME [--pool P] [--full-clone]`` (linked by default)."""

    model_config = ConfigDict(extra="forbid")

    volume: str = Field(description="the new volume's name")
    pool: str | None = Field(None, description="pool of the new volume (default: the template's)")
    linked: bool = Field(True, description="a qcow2 overlay backed by the template (false: a full copy)")

    @field_validator("volume")
    @classmethod
    def _volume(cls, v: str) -> str:
        return as_value_error(validate_name, v, "volume name")

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_name, v, "pool name")


class ImageRef(BaseModel):
    """An image: a pool volume (``pool`` + ``volume``) or, for admins, a file on the host (``path``)."""

    model_config = ConfigDict(extra="forbid")

    pool: str | None = None
    volume: str | None = None
    path: str | None = Field(None, description="a host path (admins only)")

    @field_validator("pool", "volume")
    @classmethod
    def _names(cls, v: str | None, info: ValidationInfo) -> str | None:
        return None if v is None else as_value_error(validate_name, v, info.field_name or "name")

    @field_validator("path")
    @classmethod
    def _abs(cls, v: str | None) -> str | None:
        return _path(v, "path")

    @model_validator(mode="after")
    def _one(self) -> ImageRef:
        if self.path is not None and (self.pool is not None or self.volume is not None):
            raise ValueError("give either pool and volume, or path, not both")
        if self.path is None and (self.pool is None or self.volume is None):
            raise ValueError("give pool and volume (a pool volume) or path (a host file, admins only)")
        return self


class ConvertSpec(BaseModel):
    """``kvmkit image convert SRC DST --format F [--src-format F] [--vm NAME]``."""

    model_config = ConfigDict(extra="forbid")

    source: ImageRef
    dest: ImageRef = Field(description="a new pool volume (its pool must be a directory pool) or host path")
    format: VolumeFormat = Field(description="the format of dest")
    source_format: ReadFormat | None = Field(None, description="the source's format (default: a pool volume's "
                                                               "own, or read from the header by kvmkit)")
    vm: str | None = Field(None, description="source is a disk of this shut-off VM: switch the VM to dest")

    @field_validator("vm")
    @classmethod
    def _vm(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_name, v, "VM name")


class BuildSpec(BaseModel):
    """``kvmkit image build micro|debian-12 [--force] [--kernel debian|minimal]``: built into kvmkit's cache
    (the CLI's ``--out`` copies the result elsewhere on the host; over the API, import it into a pool with
    image convert)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["micro", "debian-12"]
    force: bool = Field(False, description="rebuild even when the cache is current")
    kernel: Literal["debian", "minimal"] = Field("debian", description="micro only: which kernel")

    @model_validator(mode="after")
    def _kernel(self) -> BuildSpec:
        if self.kernel != "debian" and self.name != "micro":
            raise ValueError("kernel takes debian or minimal, and only for the micro image")
        return self
