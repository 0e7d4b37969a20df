"""Typed answers about a VM's copies and devices: the snapshot list, and the results of the tasks
vm.snapshot.*, vm.clone, vm.backup, vm.restore, vm.disk.detach, vm.nic.detach (kvmkit.service.copies,
kvmkit.service.vms.devices)."""

from __future__ import annotations

from pydantic import Field

from kvmkit.api.models.base import Out


class Snapshot(Out):
    name: str
    parent: str | None
    state: str | None = Field(description="the VM's state when it was taken: running, shutoff, paused, disk-snapshot")
    description: str
    created: str = Field(description="ISO 8601")
    kind: str = Field(description="internal (inside the qcow2 files) or external (overlay files)")
    memory: bool = Field(description="holds the memory too (reverting resumes the VM where it was)")
    memory_file: str | None
    overlays: dict[str, str | None] = Field(description="external: disk target -> its overlay file")
    current: bool
    quiesced: bool | None = Field(None, description="the guest's file systems were frozen by its agent while it "
                                                    "was taken (null: made before kvmkit recorded it)")
    consistency: str | None = Field(None, description="quiesced, crash-consistent, memory (with the memory) or "
                                                      "offline (the VM was shut off)")
    quiesce_error: str | None = Field(None, description="why the agent could not freeze the guest")


class SnapshotRow(Snapshot):
    """One snapshot of ``GET /api/v1/vms/{name}/snapshots``, in tree order (parents before children)."""

    children: list[str]
    depth: int = Field(description="0 for a root")


class SnapshotMade(Snapshot):
    """Result of vm.snapshot.create."""

    vm: str
    note: str | None = Field(None, description="why it was made external (a UEFI VM)")


class SnapshotReverted(Out):
    """Result of vm.snapshot.revert."""

    vm: str
    snapshot: str
    state: str = Field(description="the VM's state after the revert")


class SnapshotDeleted(Out):
    """Result of vm.snapshot.delete."""

    vm: str
    deleted: str
    kind: str
    merged: list[str] = Field(description="external: the overlay files merged back")


class ClonedDisk(Out):
    target: str
    path: str
    format: str
    backing: str | None = Field(description="linked: the source's disk it is an overlay of")
    backing_format: str | None = None
    pool: str | None = None
    copied_from: str | None = None


class VMCloned(Out):
    """Result of vm.clone."""

    name: str
    source: str
    linked: bool
    uuid: str
    disks: list[ClonedDisk]
    macs: list[str]
    serial_logs: list[str | None]
    source_snapshot: str | None = Field(description="linked: the snapshot of the source its disks are based on")
    nvram: str | None


class BackupDisk(Out):
    target: str
    file: str
    format: str
    original_path: str | None
    original_format: str
    virtual_size: int


class Backup(Out):
    """Result of vm.backup: the backup's manifest (manifest.json) and its directory."""

    format: str = Field(description="kvmkit-backup")
    version: int
    vm: str
    uuid: str
    created: str
    consistency: str
    frozen: bool = Field(description="the guest's file systems were frozen by its agent")
    quiesced: bool = Field(description="the same as frozen (the word snapshots use)")
    domain_xml: str
    domain_xml_secrets: bool
    private_files: list[str]
    nvram: str | None
    disks: list[BackupDisk]
    sha256: dict[str, str] = Field(description="file -> sha256")
    sizes: dict[str, int] = Field(description="file -> bytes")
    path: str = Field(description="the backup's directory (restore it with POST /api/v1/backups/restore)")


class RestoredDisk(Out):
    target: str
    path: str
    format: str


class VMRestored(Out):
    """Result of vm.restore."""

    name: str
    uuid: str
    from_: str = Field(alias="from", description="the backup's directory")
    source_vm: str
    pool: str
    disks: list[RestoredDisk]
    macs: list[str]
    renamed: bool


class DeviceDetached(Out):
    """Result of vm.disk.detach (``target``) and vm.nic.detach (``mac``)."""

    name: str
    action: str
    target: str | None = None
    mac: str | None = None
    live: bool
    config: bool
