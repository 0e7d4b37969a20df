"""Device parts of a VM spec: disks and CD-ROMs, network interfaces, graphics, NUMA tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from kvmkit.spec.common import (
    IFNAME_RE,
    MAX_DISK_BYTES,
    as_value_error,
    parse_size_bytes,
    validate_cpuset,
    validate_mac,
    validate_name,
    validate_text,
)

DiskBus = Literal["virtio", "virtio-scsi", "sata", "ide"]
# the order of kvmkit.spec.storage.VolumeFormat: equal Literals share one cached schema (the first one made),
# so one order keeps the OpenAPI document the same whatever was imported first
DiskFormat = Literal["qcow2", "raw"]
CacheMode = Literal["none", "writethrough", "writeback", "directsync", "unsafe"]
IoMode = Literal["native", "threads"]
NicModel = Literal["virtio", "e1000e", "rtl8139"]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)


class DiskSpec(_Part):
    """One disk or CD-ROM. Exactly one source: ``path`` (file or block device), ``volume`` in ``pool``,
    or ``size`` (a new volume created in ``pool``)."""

    device: Literal["disk", "cdrom"] = "disk"
    path: str | None = None          # an existing file (or block device when it starts with /dev/)
    volume: str | None = None        # an existing volume in ``pool``
    pool: str | None = None          # pool of ``volume`` or of the new disk (default 'default')
    size: int | None = None          # bytes; a new volume is created
    format: DiskFormat | None = None  # None: qcow2 for new disks, detected from the header for paths
    bus: DiskBus = "virtio"
    target: str | None = None        # vda, sdb ...; assigned when None
    cache: CacheMode | None = None
    io: IoMode | None = None
    readonly: bool = False
    shareable: bool = False

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: object) -> object:
        if v is None:
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            if v <= 0:
                raise ValueError(f"disk size {v} must be greater than zero; e.g. size=10G")
            size = v  # an int is already bytes (API bodies); strings are parsed ('10G', '2048' = MiB)
        else:
            size = as_value_error(parse_size_bytes, v, "disk size")  # type: ignore[arg-type]
        if size > MAX_DISK_BYTES:
            raise ValueError(f"disk size {size} bytes is above the limit of {MAX_DISK_BYTES // 1024**4} TiB; "
                             "use at most 64T per disk")
        return size

    @field_validator("pool", "volume")
    @classmethod
    def _names(cls, v: str | None, info) -> str | None:
        return None if v is None else as_value_error(validate_name, v, f"disk {info.field_name}")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(f"disk path {v!r} is not absolute; give the full path, e.g. /var/lib/images/a.qcow2")
        return None if v is None else as_value_error(validate_text, v, "disk path", single_line=True)

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        if v is not None and not (v[:2] in ("vd", "sd", "hd") and v[2:].isascii() and v[2:].isalpha()
                                  and 3 <= len(v) <= 4):
            raise ValueError(f"disk target {v!r} is not a device name; use vda, sdb, hdc ...")
        return v

    @model_validator(mode="before")
    @classmethod
    def _cdrom_bus(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("device") == "cdrom" and not data.get("bus"):
            return {**data, "bus": "sata"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DiskSpec:
        sources = [s for s in ("path", "volume", "size") if getattr(self, s) is not None]
        if self.device == "cdrom":
            self.readonly = True
            if self.bus == "virtio":
                raise ValueError("a CD-ROM cannot use bus virtio; use bus=sata (default for --cdrom) or ide")
            if self.size is not None:
                raise ValueError("a CD-ROM cannot have a size; give path=ISO")
            if len(sources) > 1:
                raise ValueError("a CD-ROM takes one source: path=ISO or volume=NAME")
        elif len(sources) != 1:
            got = ", ".join(sources) or "none"
            raise ValueError(f"a disk needs exactly one of path=, volume= or size= (got {got}); "
                             "e.g. --disk size=10G or --disk path=/var/lib/images/a.qcow2")
        if self.volume and not self.pool:
            self.pool = "default"
        if self.io == "native" and self.cache not in ("none", "directsync"):
            raise ValueError(f"disk io=native needs cache=none or cache=directsync (got cache={self.cache}); "
                             "set cache=none or use io=threads")
        return self

    @property
    def is_new(self) -> bool:
        return self.size is not None

    @property
    def is_block(self) -> bool:
        return self.path is not None and self.path.startswith("/dev/")


class NicSpec(_Part):
    """A network interface: a libvirt network, a host bridge, or macvtap (``direct``) on a host device."""

    type: Literal["network", "bridge", "direct"] = "network"
    source: str = "default"          # network name, bridge name or host device
    mode: Literal["bridge", "vepa", "private", "passthrough"] = "bridge"  # macvtap mode (direct only)
    model: NicModel = "virtio"
    mac: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_mac, v, "network mac")

    @field_validator("source")
    @classmethod
    def _source(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("type", "network") != "network":  # a host bridge or device: a kernel interface name
            if not IFNAME_RE.fullmatch(v):
                raise ValueError(f"{v!r} is not a host interface name (1-15 letters, digits, '_', '.', '-')")
            return v
        if not v or len(v) > 64 or any(c in v for c in "/<>&'\" ") or any(not c.isprintable() for c in v):
            raise ValueError(f"network source {v!r} is not a libvirt network name (1-64 printable characters, "
                             "no spaces, '/', '<', '>', '&' or quotes)")
        return v


class GraphicsSpec(_Part):
    """A VNC or SPICE display: on loopback, with a password, unless told otherwise. Without ``password``
    a VM create gives it a random one (the console proxy reads it from libvirt) unless ``auto_password``
    is false."""

    type: Literal["vnc", "spice"] = "vnc"
    listen: str = "127.0.0.1"
    password: str | None = None
    auto_password: bool = True       # create: no password given -> a random one; false: no password at all
    port: int | None = None          # None: autoport

    @field_validator("password")
    @classmethod
    def _password(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        if not v or not all(" " <= c <= "~" for c in v):
            raise ValueError("a display password is 1 or more printable ASCII characters (letters, digits, "
                             "punctuation, space)")
        if info.data.get("type") == "vnc" and len(v) > 8:
            raise ValueError("a VNC password is at most 8 characters (the VNC protocol uses only 8)")
        if len(v) > 64:
            raise ValueError("a SPICE password is at most 64 characters")
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: int | None) -> int | None:
        if v is not None and v != -1 and not 5900 <= v <= 65535:
            raise ValueError(f"graphics port {v} is out of range; use 5900-65535 or leave it out for autoport")
        return None if v == -1 else v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        import ipaddress

        try:
            return str(ipaddress.ip_address(v))
        except ValueError:
            raise ValueError(f"graphics listen {v!r} is not an IP address; e.g. 127.0.0.1 or 0.0.0.0") from None


class NumaTuneSpec(_Part):
    mode: Literal["strict", "preferred", "interleave", "restrictive"] = "strict"
    nodeset: str

    @field_validator("nodeset")
    @classmethod
    def _nodeset(cls, v: str) -> str:
        return as_value_error(validate_cpuset, v, "numatune nodeset")


__all__ = ["DiskSpec", "GraphicsSpec", "NicSpec", "NumaTuneSpec", "validate_name"]
