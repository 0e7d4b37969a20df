"""Typed answers of /api/v1/vms (list, show, change, console ticket) and the results of the VM tasks
(vm.create, vm.start ... vm.delete): what kvmkit.service.vms returns."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from kvmkit.api.models.base import Out
from kvmkit.api.models.guest_os import OsRef, OsSummary
from kvmkit.api.models.hosts import Placement
from kvmkit.api.models.vm_guest import GuestAgent

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


class VMTpm(Out):
    model: str | None = Field(description="e.g. tpm-crb")
    backend: str | None = Field(description="e.g. emulator (swtpm)")
    version: str | None = Field(description="e.g. 2.0")


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
    os: OsRef | None = Field(description="the OS it was made for (the spec's os), as libosinfo knows it")
    tpm: VMTpm | None = Field(description="its emulated TPM (null: none)")
    secure_boot: bool = Field(description="UEFI Secure Boot is asked for")
    agent: GuestAgent
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
    os: OsSummary | None = Field(None, description="with the spec's os: the OS whose preset was applied")
    warnings: list[str] | None = Field(None, description="with os: what the preset could not give the VM")
    notes: list[str] | None = Field(None, description="with os: what the preset chose, and why")
    host: str | None = Field(None, description="placed (no ?host= given, more than one host): the host chosen")
    placement: Placement | None = Field(None, description="placed: how each host was weighed")


class ImportedGuest(Out):
    """What libguestfs inspection found in an imported VM's disks."""

    found: bool = Field(description="an operating system was found")
    root: str | None
    os_type: str | None = Field(description="linux, windows, freebsd ...")
    distro: str | None
    product: str | None
    major: int | None
    minor: int | None
    osinfo: str | None = Field(description="libguestfs's osinfo short id (debian12, win10 ...)")
    arch: str | None
    hostname: str | None
    firmware: str | None = Field(description="uefi, bios, or null (cannot tell)")
    bootloader: str | None
    virtio_block: bool
    virtio_net: bool
    kernel: str | None = Field(description="guest path of the newest kernel in /boot")
    initrd: str | None
    kernel_file: str | None = Field(description="the host copy of the kernel booted directly, if any")
    initrd_file: str | None
    root_uuid: str | None
    cmdline: str | None = Field(description="/etc/kernel/cmdline when the guest has one")
    fstab_sd: bool = Field(description="/etc/fstab names /dev/sdX or /dev/hdX (renamed under virtio)")


class ImportedDisk(Out):
    source: str = Field(description="the disk in the package (or the file) it was converted from")
    format: str = Field(description="its format, as read from its header")
    volume: str = Field(description="the pool volume it became")
    path: str
    virtual_size: int = Field(description="bytes")


class VMImported(VMCreated):
    """Result of vm.import: the created VM, and how the import went."""

    source: str = Field(description="the file imported")
    kind: str = Field(description="ova, ovf or disk")
    manifest: str | None = Field(description="checked: the package's .mf digests matched; none: it had no manifest")
    pool: str = Field(description="the pool the disks were converted into")
    needed_bytes: int = Field(description="the space the conversion needed in the pool")
    disks: list[ImportedDisk] = Field(description="the converted disks")  # type: ignore[assignment]

    path: Literal["kvmkit", "virt-v2v"] = Field(description="which path converted it")
    guest: ImportedGuest
    boot: Literal["kernel", "firmware", "unknown"] = Field(
        description="kernel: boots the guest's kernel directly; firmware: through its boot loader")


class VMActionDone(Out):
    """Result of vm.start, vm.shutdown, vm.reboot, vm.destroy, vm.suspend, vm.resume (and vm.crash-restart)."""

    name: str
    action: str
    state: str = Field(description="after the action")
    restored_from_managed_save: bool | None = Field(None, description="start: it resumed a saved state")
    log_append_set: list[str] | None = Field(None, description="start: serial logs switched to append first")
    forced: bool | None = Field(None, description="shutdown: powered off after the timeout")
    seconds: float | None = Field(None, description="shutdown: how long it took")
    method: Literal["acpi", "agent", "forced"] | None = Field(
        None, description="shutdown, reboot: how it went (the power button, the guest agent, or a power cut)")
    agent_tried: bool | None = Field(None, description="shutdown forced: the guest agent's power-off was tried first")
    seed_ejected: str | None = Field(None, description="shutdown, reboot: the cloud-init seed volume ejected first "
                                                       "(cloud-init had finished)")


class CrashRestarted(VMActionDone):
    """Result of vm.crash-restart (the server's own task when a VM's QEMU died and on_crash says restart)."""

    policy: str = Field(description="the VM's on_crash policy")
    note: str | None = Field(None, description="why nothing was done (it runs again already)")


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
