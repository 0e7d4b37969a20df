"""Typed answers of the storage routes (pools, volumes, images, templates) and of their tasks.

They describe what the service functions return (kvmkit.service.storage); ``extra="allow"`` keeps a
field the service adds later instead of dropping it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


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


class Autostart(BaseModel):
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


TaskState = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Task(_Out):
    """A task (GET /api/v1/tasks/{id}); ``result`` is the operation's answer once it succeeded."""

    id: str
    kind: str
    target: str
    state: TaskState
    percent: int
    message: str | None
    error: str | None
    result: dict[str, object] | None
    user: str | None
    created_at: str | None
    finished_at: str | None


class UploadTask(Task):
    result: UploadResult | None  # type: ignore[assignment]


class UploadFailed(_Out):
    """An upload that failed: the error, and the task that journals it."""

    error: str
    hint: str | None
    code: str
    task_id: str
    task: Task
