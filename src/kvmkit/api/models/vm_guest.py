"""Typed answers of /api/v1/vms/{name}/exec, /password, /seed/eject and /guest/... (routes/vm_guest.py):
what kvmkit.service.guests returns, and the result of the vm.seed.eject task."""

from __future__ import annotations

from pydantic import Field

from kvmkit.api.models.base import Out


class ExecResult(Out):
    name: str
    command: list[str]
    pid: int
    exited: bool
    timed_out: bool
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    stdout_b64: str | None = None
    stderr_b64: str | None = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    seconds: float
    message: str | None = None


class PasswordResult(Out):
    name: str
    user: str
    action: str
    changed: bool


class GuestEntry(Out):
    name: str
    path: str
    type: str
    mode: str
    size: int
    uid: int
    gid: int
    mtime: int
    target: str | None = None


class GuestListing(Out):
    vm: str
    path: str
    entries: list[GuestEntry]


class GuestFilesystem(Out):
    filesystem: str
    size_kib: int
    used_kib: int
    available_kib: int
    use_percent: float


class GuestDf(Out):
    vm: str
    readonly: bool
    filesystems: list[GuestFilesystem]


class GuestFs(Out):
    device: str | None = None
    type: str | None = None
    label: str | None = None
    uuid: str | None = None


class GuestOS(Out):
    """One operating system as libguestfs inspection reports it (virt-inspector's fields)."""

    root: str | None = None
    name: str | None = Field(None, description="linux, windows, freebsd ...")
    arch: str | None = None
    distro: str | None = None
    product_name: str | None = None
    product_variant: str | None = None
    major_version: str | None = None
    minor_version: str | None = None
    package_format: str | None = None
    package_management: str | None = None
    hostname: str | None = None
    osinfo: str | None = Field(None, description="the libosinfo short id, e.g. debian12")
    windows_systemroot: str | None = None
    mountpoints: dict[str, str | None] = Field(default_factory=dict, description="mount point -> device")
    filesystems: list[GuestFs] = Field(default_factory=list)


class GuestInspection(Out):
    vm: str
    readonly: bool
    disks: list[str]
    operating_systems: list[GuestOS]


class CopiedIn(Out):
    vm: str
    path: str
    size: int
    sha256: str


class CloudInitResult(Out):
    datasource: str = Field(description="where cloud-init read its data from (kvmkit's seed: NoCloud)")
    errors: list[str]


class SeedEjected(Out):
    """Result of vm.seed.eject."""

    name: str
    action: str = Field(description="eject-seed")
    volume: str | None = Field(description="the seed's volume (deleted)")
    target: str | None = Field(description="the seed's disk target, e.g. sda")
    forced: bool = Field(description="ejected without asking the guest agent")
    cloud_init: CloudInitResult | None = Field(description="cloud-init's result as the guest said (null: forced)")


class AgentOS(Out):
    """The guest's OS as its agent reports it (libvirt's os.* guest info, dashes as underscores)."""

    id: str | None = None
    name: str | None = None
    pretty_name: str | None = None
    version: str | None = None
    version_id: str | None = None
    kernel_release: str | None = None
    kernel_version: str | None = None
    machine: str | None = None
    variant: str | None = None
    variant_id: str | None = None


class AgentTimezone(Out):
    name: str | None
    offset: int | None = Field(description="seconds east of UTC")


class AgentUser(Out):
    name: str | None
    domain: str | None
    login_time: int | None = Field(description="milliseconds since the epoch")


class AgentFilesystem(Out):
    mountpoint: str | None
    device: str | None
    fstype: str | None
    total_bytes: int | None
    used_bytes: int | None
    disks: list[str | None] = Field(description="the VM's disks (aliases) it lives on")


class AgentAddress(Out):
    type: str | None = Field(description="ipv4 or ipv6")
    addr: str | None
    prefix: int | None


class AgentInterface(Out):
    name: str | None
    mac: str | None
    addresses: list[AgentAddress]


class GuestAgent(Out):
    """The ``agent`` part of ``GET /api/v1/vms/{name}``: the channel's state, and what the agent reports while
    it is connected."""

    configured: bool = Field(description="the VM has a guest-agent channel")
    state: str = Field(description="none (no channel), off (VM not running), disconnected or connected")
    connected: bool
    error: str | None = Field(None, description="connected, but it did not answer")
    os: AgentOS | None = None
    hostname: str | None = None
    timezone: AgentTimezone | None = None
    users: list[AgentUser] | None = None
    filesystems: list[AgentFilesystem] | None = None
    interfaces: list[AgentInterface] | None = None
