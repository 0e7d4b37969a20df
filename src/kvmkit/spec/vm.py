"""The VM spec: the one way in for CLI flags, API bodies and portal forms, validated once here."""

from __future__ import annotations

import re
import uuid as uuid_mod
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kvmkit.errors import InvalidInput
from kvmkit.spec.cloud_init import CloudInitSpec
from kvmkit.spec.common import (
    MAX_DISKS,
    MAX_MEMORY_MIB,
    MAX_NICS,
    MAX_VCPUS,
    as_value_error,
    check_max,
    parse_size_mib,
    validate_cpuset,
    validate_name,
    validate_text,
)
from kvmkit.spec.profiles import Profile
from kvmkit.spec.profiles import apply as apply_profile
from kvmkit.spec.vm_devices import DiskSpec, GraphicsSpec, NicSpec, NumaTuneSpec

LifecycleAction = Literal["destroy", "restart", "preserve", "rename-restart", "coredump-destroy",
                          "coredump-restart"]
BootDevice = Literal["hd", "cdrom", "network", "fd"]
_META_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# an osinfo short id (debian12, win11, rhel9.1, dragonflybsd1.0A) or an osinfo id (http://debian.org/debian/12)
_OS_SHORT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_OS_ID_RE = re.compile(r"^https?://[A-Za-z0-9.-]{1,100}(/[A-Za-z0-9._~+-]{1,64}){1,8}/?$")
SERIAL_LOG_DIR = "/var/log/kvmkit"

__all__ = ["DiskSpec", "GraphicsSpec", "NicSpec", "NumaTuneSpec", "VMSpec", "parse_spec"]


class VMSpec(BaseModel):
    """Everything kvmkit knows how to say about a VM. Sizes accept '512M', '1G', '1GiB', 2048 (MiB)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str
    uuid: str | None = None
    title: str | None = None
    description: str | None = None
    virt_type: Literal["kvm", "qemu"] | None = None   # None: kvm when usable, else qemu
    profile: Profile | None = None                    # a named domain shape (spec/profiles.py), e.g. fast-boot

    memory_mib: int = 512
    max_memory_mib: int | None = None                 # balloon ceiling; defaults to memory_mib
    vcpus: int = 1
    max_vcpus: int | None = None                      # hot-plug ceiling; defaults to vcpus
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    cpu_mode: Literal["host-passthrough", "host-model", "custom", "maximum"] | None = None
    cpu_model: str | None = None                      # with cpu_mode custom, e.g. Skylake-Client
    cpuset: str | None = None                         # host CPUs the vCPUs may run on
    vcpupin: dict[int, str] = Field(default_factory=dict)   # vCPU -> host CPU list
    emulatorpin: str | None = None
    numatune: NumaTuneSpec | None = None
    hugepages: bool = False
    memory_source: Literal["memfd", "file", "anonymous"] | None = None  # <memoryBacking><source type=.../>
    nosharepages: bool = False                        # opt out of KSM

    machine: str | None = None                        # e.g. pc, q35, pc-q35-7.2
    firmware: Literal["bios", "uefi"] = "bios"
    boot: list[BootDevice] = Field(default_factory=list)
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    on_poweroff: LifecycleAction | None = None
    on_reboot: LifecycleAction | None = None
    on_crash: LifecycleAction | None = None

    disks: list[DiskSpec] = Field(default_factory=list, max_length=MAX_DISKS)
    nics: list[NicSpec] = Field(default_factory=list, max_length=MAX_NICS)
    graphics: GraphicsSpec | None = None              # None: no graphics (serial console only)
    serial: bool = True
    serial_log: str | None = None                     # default /var/log/kvmkit/<name>.serial.log
    balloon: bool = True
    rng: bool = True
    usb: bool = True                                  # False: <controller type='usb' model='none'/>
    guest_agent: bool = True

    autostart: bool = False
    metadata: dict[str, str] = Field(default_factory=dict)
    template: str | None = None                       # provision the first disk from this template
    full_clone: bool = False                          # copy the template instead of a linked overlay
    micro: bool = False                               # boot kvmkit's micro-guest (demos, tests)
    cloud_init: CloudInitSpec | None = None           # NoCloud seed disk <name>-cidata.img (create only)
    os: str | None = None                             # osinfo short id (debian12, win11) or id; create applies
    #                                                   its preset (docs/os-presets.md); kept as the osinfo id
    virtio_win: str | None = None                     # virtio-win drivers ISO: a second CD-ROM (create only)

    # -- field checks ------------------------------------------------------------------------------
    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return as_value_error(validate_name, v, "VM name")

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_name, v, "template name")

    @field_validator("uuid")
    @classmethod
    def _uuid(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return str(uuid_mod.UUID(v))
        except ValueError:
            raise ValueError(f"{v!r} is not a UUID; use the form 12345678-1234-1234-1234-123456789abc "
                             "or leave it out") from None

    @field_validator("memory_mib", "max_memory_mib", mode="before")
    @classmethod
    def _mem(cls, v: Any, info) -> Any:
        if v is None:
            return None
        what = "memory" if info.field_name == "memory_mib" else "max memory"
        mib = as_value_error(parse_size_mib, v, what)
        return as_value_error(check_max, mib, MAX_MEMORY_MIB, what, "MiB", "use at most 16T (16 TiB)")

    @field_validator("vcpus", "max_vcpus", "sockets", "cores", "threads")
    @classmethod
    def _count(cls, v: int | None, info) -> int | None:
        if v is not None and not 1 <= v <= MAX_VCPUS:
            raise ValueError(f"{info.field_name} {v} is out of range; use 1-{MAX_VCPUS}")
        return v

    @field_validator("cpuset", "emulatorpin")
    @classmethod
    def _cpuset(cls, v: str | None, info) -> str | None:
        return None if v is None else as_value_error(validate_cpuset, v, info.field_name)

    @field_validator("vcpupin")
    @classmethod
    def _pins(cls, v: dict[int, str]) -> dict[int, str]:
        return {k: as_value_error(validate_cpuset, s, f"vcpupin for vCPU {k}") for k, s in v.items()}

    @field_validator("cpu_model")
    @classmethod
    def _cpu_model(cls, v: str | None) -> str | None:
        if v is not None and not _MODEL_RE.fullmatch(v):
            raise ValueError(f"CPU model {v!r} is not a model name; e.g. Skylake-Client, EPYC, qemu64")
        return v

    @field_validator("machine")
    @classmethod
    def _machine(cls, v: str | None) -> str | None:
        if v is not None and not _MODEL_RE.fullmatch(v):
            raise ValueError(f"machine type {v!r} is not valid; e.g. pc, q35, pc-q35-7.2")
        return v

    @field_validator("os")
    @classmethod
    def _os(cls, v: str | None) -> str | None:
        return None if v is None else validate_os(v)

    @field_validator("kernel", "initrd", "serial_log", "virtio_win")
    @classmethod
    def _abs_path(cls, v: str | None, info) -> str | None:
        if v is not None and (not v.startswith("/") or not v.strip("/")):
            raise ValueError(f"{info.field_name} {v!r} is not an absolute path of a file; give the full path")
        return None if v is None else as_value_error(validate_text, v, info.field_name, single_line=True)

    @field_validator("metadata")
    @classmethod
    def _meta(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _META_KEY.fullmatch(key):
                raise ValueError(f"metadata key {key!r} is not valid; use letters, digits, '_', '.', '-'")
            as_value_error(validate_text, value, f"metadata {key}")
        return v

    @field_validator("title", "cmdline")
    @classmethod
    def _line(cls, v: str | None, info) -> str | None:
        return None if v is None else as_value_error(validate_text, v, info.field_name, single_line=True)

    @field_validator("description")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        return None if v is None else as_value_error(validate_text, v, "description")

    # -- cross-field checks ------------------------------------------------------------------------
    @model_validator(mode="after")
    def _consistent(self) -> VMSpec:
        if self.max_memory_mib is None:
            self.max_memory_mib = self.memory_mib
        if self.memory_mib > self.max_memory_mib:
            raise ValueError(f"memory {self.memory_mib} MiB is above max memory {self.max_memory_mib} MiB; "
                             f"lower memory or raise max (e.g. --memory {self.memory_mib}M,max={self.memory_mib}M)")
        if self.max_vcpus is None:
            self.max_vcpus = self.vcpus
        if self.vcpus > self.max_vcpus:
            raise ValueError(f"vcpus {self.vcpus} is above max vcpus {self.max_vcpus}; "
                             f"lower vcpus or raise max (e.g. --vcpus {self.vcpus},max={self.vcpus})")
        topo = (self.sockets, self.cores, self.threads)
        if any(t is not None for t in topo):
            s, c, t = (x or 1 for x in topo)
            if self.sockets is None:
                s = max(1, self.max_vcpus // (c * t))
            self.sockets, self.cores, self.threads = s, c, t
            if s * c * t != self.max_vcpus:
                raise ValueError(f"topology sockets={s} x cores={c} x threads={t} = {s * c * t} does not match "
                                 f"max vcpus {self.max_vcpus}; make sockets*cores*threads equal max vcpus")
        if self.cpu_mode == "custom" and not self.cpu_model:
            raise ValueError("cpu_mode custom needs cpu_model (e.g. --cpu Skylake-Client)")
        if self.cpu_model and self.cpu_mode is None:
            self.cpu_mode = "custom"
        for vcpu in self.vcpupin:
            if not 0 <= vcpu < self.max_vcpus:
                raise ValueError(f"vcpupin names vCPU {vcpu} but the VM has vCPUs 0-{self.max_vcpus - 1}")
        if (self.initrd or self.cmdline) and not self.kernel and not self.micro:
            raise ValueError("initrd/cmdline need a kernel; add --kernel PATH")
        sources = [n for n, on in (("--kernel", bool(self.kernel)), ("--template", bool(self.template)),
                                   ("--micro", self.micro)) if on]
        if len(sources) > 1:
            raise ValueError(f"choose one of {' and '.join(sources)}")
        if self.full_clone and not self.template:
            raise ValueError("full_clone only applies with a template; add --template NAME")
        macs = [n.mac for n in self.nics if n.mac]
        dupes = sorted({m for m in macs if macs.count(m) > 1})
        if dupes:
            raise ValueError(f"MAC {dupes[0]} is given to two NICs; give each NIC its own MAC or leave it out")
        targets = [d.target for d in self.disks if d.target]
        dupes = sorted({t for t in targets if targets.count(t) > 1})
        if dupes:
            raise ValueError(f"disk target {dupes[0]} is used twice; give each disk its own target")
        apply_profile(self)
        return self

    # -- helpers -------------------------------------------------------------------------------------
    def default_serial_log(self) -> str:
        return self.serial_log or f"{SERIAL_LOG_DIR}/{self.name}.serial.log"

    def updated(self, **changes: Any) -> VMSpec:
        """A re-validated copy with ``changes`` applied."""
        return parse_spec({**self.model_dump(), **changes})


def validate_os(v: str) -> str:
    """An osinfo short id (debian12) or id (http://debian.org/debian/12); ValueError naming the fix else."""
    if not (_OS_SHORT_RE.match(v) or _OS_ID_RE.match(v)):
        raise ValueError(f"OS {v!r} is not an osinfo short id or id; e.g. debian12, win11, "
                         "http://debian.org/debian/12 (see `kvmkit os list`)")
    return v


def parse_spec(data: dict[str, Any]) -> VMSpec:
    """Validate a spec, raising InvalidInput with one line that names the field and the fix."""
    try:
        return VMSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(*describe(exc)) from exc


def describe(exc: ValidationError) -> tuple[str, str]:
    """One line for a pydantic error: 'invalid <field>: <what is wrong and how to fix it>'."""
    errors = exc.errors()
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "spec"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if first.get("type") == "literal_error":
        msg = f"{first.get('input')!r} is not allowed; {msg.lower()}"
    elif first.get("type") == "extra_forbidden":
        msg = "unknown field; remove it (the fields are listed in docs/vm-spec.md)"
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if not first.get("loc"):  # a cross-field check: its message names the fields already
        return f"invalid VM spec: {msg}{extra}", "fix those values and try again"
    return f"invalid {loc}: {msg}{extra}", "fix that value and try again"
