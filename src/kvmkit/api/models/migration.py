"""Typed answers of the migration routes (routes/migration.py): the pre-check plan, the CPU baseline and
the results of the vm.migrate and host.evacuate tasks: what kvmkit.service.migration returns."""

from __future__ import annotations

from pydantic import ConfigDict, Field

from kvmkit.api.models.base import Out


class MigrationCheck(Out):
    name: str
    status: str = Field(description="pass, warn or fail")
    detail: str
    fix: str | None = None


class MigrationDisk(Out):
    target: str
    path: str
    kind: str = Field(description="disk, cdrom, boot (kernel, initrd, loader, nvram) or log")
    readonly: bool
    action: str = Field(description="shared (the destination sees this file), copy, or none")
    format: str | None = None
    capacity: int | None = None
    allocation: int | None = None
    source_pool: str | None = None
    dest_pool: str | None = None
    same_file: bool | None = None


class MigrationPlan(Out):
    vm: str
    source: str
    dest: str
    mode: str
    transport: str = Field(description="peer-to-peer, or managed when the destination's URI is a local one")
    ok: bool
    checks: list[MigrationCheck]
    disks: list[MigrationDisk]
    memory_mib: int
    vcpus: int
    clock_skew_s: float | None = None
    notes: list[str]


class BaselineLeftOut(Out):
    host: str
    reason: str | None


class CpuBaseline(Out):
    model: str | None
    virt_type: str
    arch: str
    hosts: list[str]
    left_out: list[BaselineLeftOut] = Field(description="hosts that could not say which CPU they give, and why")
    features: dict[str, str]
    usable_everywhere: bool = Field(description="the baseline's model is usable as it is on every host")
    recommended: str | None = Field(description="the model to name with --cpu / cpu_model")
    cpu_xml: str
    create_option: str | None


class VMOnHost(Out):
    """A VM as one host sees it after a migration (``defined`` null: the host could not be asked)."""

    host: str
    defined: bool | None
    state: str | None
    persistent: bool | None = None
    active: bool | None = None
    error: str | None = None


class VMWhereabouts(Out):
    source: VMOnHost
    dest: VMOnHost
    actions: list[str] | None = Field(None, description="after a failure: the clean-up done")


class VMMigrated(Out):
    """Result of vm.migrate. A migration libvirt reported failed although the VM runs on the destination (and
    is gone from the source) is a success with ``warning`` and without the job's statistics."""

    model_config = ConfigDict(populate_by_name=True)

    vm: str
    from_host: str = Field(alias="from", description="the source host")
    to: str
    mode: str = Field(description="live or offline")
    transport: str
    warning: str | None = None
    flags: list[str] | None = Field(None, description="the VIR_MIGRATE_* flags passed")
    unsafe: bool | None = Field(None, description="VIR_MIGRATE_UNSAFE was passed (see unsafe_reason)")
    unsafe_reason: str | None = None
    bandwidth_mib: int | None = None
    copy_storage: bool | None = None
    postcopy: bool | None = None
    state: str | None = Field(None, description="the VM's state on the destination")
    where: VMWhereabouts
    job_ms: int | None = None
    downtime_ms: int | None = Field(None, description="measured by libvirt (live)")
    downtime_net_ms: int | None = None
    setup_ms: int | None = None
    data_total: int | None = None
    data_transferred: int | None = None
    memory_bps: int | None = None
    disk_transferred: int | None = None
    iterations: int | None = None
    clock_delta_ms: int | None = None
    clock_skew_s: float | None = None
    wall_s: float | None = None
    disks: list[MigrationDisk] | None = None
    checks: list[MigrationCheck]
    notes: list[str]
    source_volumes_removed: list[str] | None = Field(None, description="copy_storage: the source's files deleted")


class EvacuatedVM(Out):
    vm: str
    to: str | None
    mode: str | None
    downtime_ms: int | None
    job_ms: int | None
    unsafe: bool | None
    warning: str | None


class NotEvacuated(Out):
    vm: str
    reason: str


class HostEvacuated(Out):
    """Result of host.evacuate."""

    host: str
    maintenance: bool
    moved: list[EvacuatedVM]
    not_moved: list[NotEvacuated]
    remaining: list[str] | None = Field(description="the VMs still on the host (null: it could not be asked)")
    empty: bool
