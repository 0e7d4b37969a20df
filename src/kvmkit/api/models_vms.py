"""Typed answers of /api/v1/vms (list, show, change, console ticket) and the results of the VM tasks
(vm.create, vm.start ... vm.delete): what kvmkit.service.vms returns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvmkit.api.models_base import Out

STATE = ("libvirt's state as a word: running, blocked, paused, shutdown (shutting down), shut-off, crashed, "
         "pmsuspended, nostate")


class VMRow(Out):
    """One VM of ``GET /api/v1/vms`` (``kvmkit vm list``), from one bulk libvirt call."""

    name: str
    uuid: str
    state: str = Field(description=STATE)
    state_reason: str = Field(description="libvirt's reason for the state: booted, user, crashed, io-error, ...")
    vcpus: int | None = Field(description="current vCPUs (null when libvirt does not say)")
    max_vcpus: int | None
    memory_mib: int | None = Field(description="current memory (the balloon's size)")
    max_memory_mib: int | None
    host: str = Field(description="the name of the host it is on in the inventory (`local`: the server's own)")


class VMTopology(Out):
    sockets: int | None = None
    dies: int | None = Field(None, description="only when more than 1")
    clusters: int | None = None
    cores: int | None = None
    threads: int | None = None


class VMDisk(Out):
    target: str = Field(description="e.g. vda")
    device: str = Field(description="disk or cdrom")
    bus: str
    format: str | None
    source: str | None = Field(description="a path, or POOL/VOLUME")
    cache: str | None
    readonly: bool


class VMNic(Out):
    type: str = Field(description="network, bridge or direct")
    source: str = Field(description="the network, bridge or host device")
    model: str
    mac: str | None


class VMGraphics(Out):
    type: str = Field(description="vnc or spice")
    listen: str | None
    port: int | None = Field(description="while it runs")
    autoport: bool
    password_set: bool = Field(description="whether the display has a password (never the password)")


class GuestAddress(Out):
    interface: str | None = Field(description="the host's tap device")
    mac: str
    network: str | None
    bridge: str | None
    addr: str
    prefix: int | None
    type: str = Field(description="ipv4 or ipv6")
    source: str = Field(description="where it was found: lease (libvirt DHCP), arp (host neighbours) or agent")


class VMOs(Out):
    """The guest OS the VM was made for (``vm create --os``), from libosinfo's database or kvmkit's overlay."""

    id: str
    short_id: str | None
    name: str | None
    version: str | None = None
    family: str | None = None
    distro: str | None = None
    release_date: str | None = None
    source: str | None = Field(description="which database the entry came from (null: no longer known)")
    source_name: str | None = None
    replaces: str | None = Field(None, description="the newer release this entry stands in for, if any")


class VMTpm(Out):
    model: str | None = Field(description="tpm-crb or tpm-tis")
    backend: str | None = Field(description="emulator (swtpm) or passthrough")
    version: str | None = Field(description="TPM version, e.g. 2.0")


class AgentOs(Out):
    """The guest's own account of its OS (guest-get-osinfo)."""

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
    login_time: float | None = Field(description="seconds since the epoch")


class AgentFilesystem(Out):
    mountpoint: str | None
    device: str | None
    fstype: str | None
    total_bytes: int | None
    used_bytes: int | None
    disks: list[str | None] = Field(description="the VM's disks it lives on (their aliases)")


class AgentAddress(Out):
    type: str | None = Field(description="ipv4 or ipv6")
    addr: str | None
    prefix: int | None


class AgentInterface(Out):
    name: str | None
    mac: str | None
    addresses: list[AgentAddress]


class VMAgent(Out):
    """The guest agent: its channel state and, when it answers, what it reports."""

    configured: bool = Field(description="the VM has the agent channel")
    state: str = Field(description="none (no channel), disconnected, connected")
    connected: bool
    error: str | None = Field(None, description="why the connected agent did not answer")
    os: AgentOs | None = None
    hostname: str | None = None
    timezone: AgentTimezone | None = None
    users: list[AgentUser] | None = None
    filesystems: list[AgentFilesystem] | None = None
    interfaces: list[AgentInterface] | None = None


class VMDetail(Out):
    """``GET /api/v1/vms/{name}`` (``kvmkit vm show``)."""

    name: str
    uuid: str | None
    title: str | None
    description: str | None
    state: str = Field(description=STATE)
    state_reason: str
    active: bool
    persistent: bool
    autostart: bool
    virt_type: str | None = Field(description="kvm or qemu (TCG)")
    virt_type_reason: str | None
    vcpus: int
    max_vcpus: int | None
    memory_mib: int
    max_memory_mib: int | None
    topology: VMTopology | None
    cpu_mode: str | None
    cpu_model: str | None
    machine: str | None
    firmware: str = Field(description="bios or uefi")
    boot: list[str] = Field(description="boot devices in order: hd, cdrom, network, fd")
    kernel: str | None
    initrd: str | None
    cmdline: str | None
    disks: list[VMDisk]
    nics: list[VMNic]
    macs: list[str]
    graphics: VMGraphics | None
    serial_log: str | None
    hugepages: bool
    nosharepages: bool
    balloon: bool
    rng: bool
    guest_agent: bool
    usb: bool
    profile: str | None = Field(description="the domain shape it was made with, e.g. fast-boot")
    metadata: dict[str, str] = Field(description="kvmkit's metadata of the VM (e.g. the task that made it)")
    host: str
    addresses: list[GuestAddress] = Field(description="while it runs")
    ip: str | None = Field(description="the first IPv4 address of addresses")
    os: VMOs | None = Field(description="the guest OS it was made for (vm create --os); null: none given")
    tpm: VMTpm | None = Field(description="its TPM (swtpm), if any")
    secure_boot: bool = Field(description="UEFI Secure Boot is on")
    agent: VMAgent
    xml: str | None = Field(None, description="?xml=true: the domain XML (without display passwords)")


class ResourcesChanged(Out):
    """``PATCH /api/v1/vms/{name}``: what was changed (only the fields the request gave)."""

    name: str
    vcpus: VcpusSet | None = None
    memory: MemorySet | None = None
    autostart: AutostartSet | None = None
    boot: BootSet | None = None


class _Applied(Out):
    name: str
    action: str
    live: bool = Field(description="changed in the running VM")
    config: bool = Field(description="changed in its definition")


class VcpusSet(_Applied):
    vcpus: int
    max_vcpus_raised_to: int | None = Field(description="the definition's maximum, when it had to be raised")


class MemorySet(_Applied):
    memory_mib: int
    max_memory_raised_to_mib: int | None


class AutostartSet(Out):
    name: str
    action: str
    autostart: bool


class BootSet(_Applied):
    boot: list[str] = Field(description="the new boot order in the definition")
    old_boot: list[str] = Field(description="the order before (empty: none given in <os>)")
    changed: bool
    applies: Literal["next start"] = Field(description="libvirt applies a boot order when the VM starts")
    running: bool = Field(description="the VM runs now (with the order it was started with)")
    warnings: list[str] = Field(description="listed device kinds the VM lacks, a direct kernel boot ...")


class ConsoleTicket(Out):
    """``POST /api/v1/vms/{name}/console``: open ``ws_path?ticket=TICKET`` within 60 s (once)."""

    ticket: str = Field(description="kvt_...: single use")
    expires_at: str = Field(description="ISO 8601")
    kind: str = Field(description="serial or vnc")
    view_only: bool
    ws_path: str = Field(description="the WebSocket to open")


# --- task results ---------------------------------------------------------------------------------

class VMCreated(Out):
    """Result of vm.create."""

    name: str
    uuid: str
    defined: bool
    started: bool
    state: str
    virt_type: str | None
    virt_type_reason: str | None
    disks: list[str] = Field(description="the disks' paths")
    volumes_created: list[str]
    macs: list[str | None]
    serial_log: str | None
    autostart: bool


class VMActionDone(Out):
    """Result of vm.start, vm.shutdown, vm.reboot, vm.destroy, vm.suspend, vm.resume (and vm.crash-restart)."""

    name: str
    action: str
    state: str = Field(description="after the action")
    restored_from_managed_save: bool | None = Field(None, description="start: it resumed a saved state")
    log_append_set: list[str] | None = Field(None, description="start: serial logs switched to append first")
    forced: bool | None = Field(None, description="shutdown: powered off after the timeout")
    seconds: float | None = Field(None, description="shutdown: how long it took")
    method: str | None = Field(None, description="shutdown and reboot: acpi (the power button), agent (the guest "
                                                 "agent, when the guest ignored the button) or forced (power cut)")
    agent_tried: bool | None = Field(None, description="a forced shutdown: whether the agent was asked first")
    seed_ejected: str | None = Field(None, description="the cloud-init seed volume ejected on the way (eject=yes)")


class CrashRestarted(VMActionDone):
    """Result of vm.crash-restart (the server's own task when a VM's QEMU died and on_crash says restart)."""

    policy: str = Field(description="the VM's on_crash policy")


class KeptDisk(Out):
    path: str
    reason: str


class FailedDisk(Out):
    path: str
    error: str


class VMDeleted(Out):
    """Result of vm.delete."""

    name: str
    action: str
    state: str
    deleted: list[str] = Field(description="the disks deleted (storage=true)")
    kept: list[KeptDisk] = Field(description="disks kept because something else uses them")
    failed: list[FailedDisk]


ResourcesChanged.model_rebuild()
