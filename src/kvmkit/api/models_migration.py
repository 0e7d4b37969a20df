"""Typed answers of the migration routes (routes_migration.py): the pre-check plan, the CPU baseline and
the results of the vm.migrate and host.evacuate tasks: what kvmkit.service.migration returns."""

from __future__ import annotations

from pydantic import Field

from kvmkit.api.models_base import Out


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


class CpuBaseline(Out):
    model: str | None
    virt_type: str
    arch: str
    hosts: list[str]
    left_out: list[dict[str, str]]
    features: dict[str, str]
    usable_everywhere: bool = Field(description="the baseline's model is usable as it is on every host")
    recommended: str | None = Field(description="the model to name with --cpu / cpu_model")
    cpu_xml: str
    create_option: str | None
