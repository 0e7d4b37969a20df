"""Typed answers of the storage routes (pools, volumes, images, templates) and of their tasks.

They describe what the service functions return (kvmkit.service.storage); see api/models/base.py for
how a field the model lacks is caught by the tests.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kvmkit.api.models.base import Out as _Out
from kvmkit.api.models.tasks import Task, TaskState

__all__ = ["Task", "TaskState"]  # the one Task model (api/models/tasks.py), re-exported for the storage routes


class PoolSource(_Out):
    device: str | None = None
    host: str | None = None
    dir: str | None = None
    format: str | None = None
    name: str | None = None


class PoolInfo(_Out):
    name: str
    uuid: str
    type: str | None
    state: str = Field(description="inactive | building | running | degraded | inaccessible")
    autostart: bool
    persistent: bool
    target: str | None
    source: PoolSource
    capacity: int = Field(description="bytes")
    allocation: int
    available: int
    volumes: int | None = Field(description="how many volumes (None while the pool is stopped)")


class PoolDeleted(_Out):
    name: str
    deleted: bool


class PoolUndefined(_Out):
    name: str
    undefined: bool


class PoolAutostart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    autostart: bool = Field(description="start the pool with libvirtd (kvmkit pool autostart NAME [--off])")


class VolumeRow(_Out):
    name: str
    path: str | None
    format: str
    capacity: int
    allocation: int
    backing: str | None
    incomplete: str | None = Field(None, description="set when an upload into it stopped in the middle")


class BackingLink(_Out):
    path: str | None
    format: str | None


class VolumeInfo(_Out):
    pool: str
    name: str
    path: str
    format: str
    capacity: int = Field(description="bytes the guest sees")
    allocation: int = Field(description="bytes used on the host")
    backing_chain: list[BackingLink]
    incomplete: str | None = Field(None, description="set when an upload into it stopped in the middle")
    owner: str | None = Field(None, description="the API user who created it (may delete, wipe, resize it)")


class VolumeDeleted(_Out):
    pool: str
    name: str
    path: str
    deleted: bool


class VolumeResized(_Out):
    pool: str
    name: str
    old_capacity: int
    capacity: int
    warning: str | None = None


class UploadResult(VolumeInfo):
    uploaded_bytes: int
    created: bool = Field(description="true when the upload made the volume")
    sha256: str = Field(description="of the bytes received and stored")


class DownloadResult(_Out):
    pool: str
    name: str
    bytes: int
    format: str
    sha256: str = Field(description="of the bytes sent")


class ImageLink(_Out):
    path: str | None
    format: str | None
    virtual_size: int | None


class ImageInfo(_Out):
    path: str | None
    format: str | None
    virtual_size: int | None
    actual_size: int | None
    backing_file: str | None
    backing_format: str | None
    backing_chain: list[ImageLink] = []


class Template(_Out):
    name: str
    pool: str
    volume: str
    path: str
    format: str
    capacity: int
    description: str = ""
    created: int = Field(description="when it was marked (Unix time)")


class TemplateUnmarked(Template):
    unmarked: bool


class UploadTask(Task):
    result: UploadResult | None  # type: ignore[assignment]


class UploadFailed(_Out):
    """An upload that failed: the error, and the task that journals it (no task when the upload was refused
    before it began: no such pool, a bad format or sha256, a busy volume)."""

    error: str
    hint: str | None = None
    code: str
    task_id: str | None = None
    task: Task | None = None


# --- task results ---------------------------------------------------------------------------------

class VolumeWiped(_Out):
    """Result of volume.wipe."""

    pool: str
    name: str
    wiped: bool
    format: str


class Converted(_Out):
    """Result of image.convert."""

    vm: str | None = Field(None, description="with vm: the VM whose disk now points at the new image")
    old: str = Field(description="the source's path")
    new: str = Field(description="the new image's path")
    old_format: str
    format: str
    volume: VolumeInfo | None = Field(None, description="when the destination is a pool volume")


class ImageBuilt(_Out):
    """Result of image.build: the files in kvmkit's cache (micro: a kernel and initramfs to boot directly;
    debian-12: also the disk image ``path``)."""

    kernel: str
    initrd: str
    cmdline: str
    key: str = Field(description="the hash of the build's inputs (a rebuild with the same inputs is cached)")
    path: str | None = Field(None, description="debian-12: the qcow2 disk image")
    format: str | None = Field(None, description="debian-12: qcow2")
    kernel_version: str | None = Field(None, description="micro")
    pvh_kernel: str | None = Field(None, description="micro: the decompressed kernel with the PVH note, if any")
    pvh_note: str | None = Field(None, description="micro: why there is no pvh_kernel")


class Provisioned(_Out):
    """Result of template.provision."""

    template: str
    volume: str
    pool: str
    path: str
    linked: bool
    info: VolumeInfo
