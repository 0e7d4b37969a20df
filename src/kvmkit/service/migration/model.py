"""What a migration works with: the two ends, the pre-checks' verdicts, the plan, and its errors."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import libvirt

from kvmkit.errors import InvalidState, OperationFailed


@dataclass
class Endpoint:
    """One end of a migration: the host's inventory name, its libvirt URI as the inventory has it and an open
    connection to it. ``maintenance``/limits come from the inventory (placement's view of the host)."""

    name: str
    uri: str
    conn: libvirt.virConnect
    maintenance: bool = False
    max_memory_mib: int | None = None
    cpu_overcommit: float | None = None

    @property
    def remote_uri(self) -> bool:
        """True when another libvirtd can open ``uri`` (it names a host: qemu+tcp://B/system, qemu+ssh://...)."""
        return bool(urlsplit(self.uri).hostname)


@dataclass
class Check:
    """One pre-check: ``status`` pass | warn | fail; ``fix`` says what to do when it is not a pass."""

    name: str
    status: str
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DiskPlan:
    """One disk (or boot file) and what the migration does with it."""

    target: str  # vda, or kernel / initrd / loader / nvram / serial-log
    path: str
    kind: str  # disk | cdrom | boot | log
    readonly: bool
    action: str  # shared (the destination sees the same file) | copy (created there, then copied) | none
    format: str | None = None
    capacity: int | None = None
    allocation: int | None = None
    source_pool: str | None = None
    dest_pool: str | None = None
    same_file: bool | None = None  # the destination sees this very file (timestamps checked)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """The outcome of the pre-checks: what will be done, and how (the flags and why each was chosen)."""

    vm: str
    source: str
    dest: str
    mode: str  # live | offline
    transport: str  # peer-to-peer | managed
    checks: list[Check] = field(default_factory=list)
    disks: list[DiskPlan] = field(default_factory=list)
    memory_mib: int = 0
    vcpus: int = 0
    uuid: str = ""
    was_paused: bool = False
    clock_skew_s: float | None = None
    notes: list[str] = field(default_factory=list)
    dest_xml: str | None = None  # the live definition for the destination when kvmkit changed it
    unsafe_reason: str | None = None  # set once kvmkit decided to pass VIR_MIGRATE_UNSAFE

    @property
    def refused(self) -> list[Check]:
        return [c for c in self.checks if c.failed]

    @property
    def copies(self) -> list[DiskPlan]:
        return [d for d in self.disks if d.action == "copy"]

    def to_dict(self) -> dict[str, Any]:
        return {"vm": self.vm, "source": self.source, "dest": self.dest, "mode": self.mode,
                "transport": self.transport, "ok": not self.refused, "checks": [c.to_dict() for c in self.checks],
                "disks": [d.to_dict() for d in self.disks], "memory_mib": self.memory_mib, "vcpus": self.vcpus,
                "clock_skew_s": self.clock_skew_s, "notes": self.notes}


class MigrationRefused(InvalidState):
    """A pre-check failed: nothing was done. The message names every cause, the hint every fix."""

    code = "migration_refused"

    def __init__(self, plan: Plan) -> None:
        causes = "; ".join(f"{c.name}: {c.detail}" for c in plan.refused)
        fixes = "; ".join(dict.fromkeys(c.fix for c in plan.refused if c.fix))
        super().__init__(f"VM '{plan.vm}' cannot move from host {plan.source} to host {plan.dest}: {causes}",
                         hint=fixes or None)
        self.plan = plan

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "checks": [c.to_dict() for c in self.plan.checks]}


class MigrationFailed(OperationFailed):
    """The migration started and did not complete; ``where`` says where the VM is now (checked on both hosts)."""

    code = "migration_failed"

    def __init__(self, message: str, hint: str | None, where: dict[str, Any]) -> None:
        super().__init__(message, hint)
        self.where = where

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "where": self.where}
