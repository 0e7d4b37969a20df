"""/api/v1/vms/{name}/disks and /nics: attach (200), detach (202, a task: a live detach waits until the
guest lets the device go) and disk resize (200) — ``kvmkit vm disk|nic attach|detach``, ``vm disk resize``.

``live``/``config`` as in the CLI: neither given = the running VM and its definition when it runs, the
definition when it is shut off. What a non-admin may attach is service/access/policy.py's to say: an
existing pool volume or a host ``path`` as a disk, or a NIC on a host bridge, are for admins (a volume
another VM writes would get a second writer; an adopted volume would go with ``DELETE ...?storage=true``).
Operators attach NICs on libvirt networks. Delegated users may attach NICs to their VMs but no storage.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kvmkit.api.deps import check_vm_visible, require, require_unrestricted, state
from kvmkit.api.driver_limits import LIMITS
from kvmkit.api.jobs.submit import not_busy, submit
from kvmkit.api.models.base import Out
from kvmkit.api.models.responses import ACCEPTED, Responses
from kvmkit.service.access import policy
from kvmkit.service.access.auth import Principal
from kvmkit.service.vms.domains import domain
from kvmkit.spec.vm_devices import DiskFormat

router = APIRouter(prefix="/vms/{name}", tags=["vm devices"], dependencies=[LIMITS])
LIVE = "the running VM (default: when it runs)"
CONFIG = "the definition used at the next start (default: when the VM is defined)"
NOT_FOUND: Responses = {404: {"description": "no such VM or device (or not delegated to you)"},
             409: {"description": "busy, in use, or in the wrong state"}}


class AttachDisk(BaseModel):
    format: DiskFormat = Field(description="the image's format (always explicit: never guessed)")
    pool: str | None = Field(None, description="storage pool of `volume`")
    volume: str | None = Field(None, description="volume name in `pool`")
    path: str | None = Field(None, description="image file or block device on the host (admins only)")
    target: str | None = Field(None, description="guest device name, e.g. vdb (default: the next free one)")
    bus: Literal["virtio", "sata", "scsi", "ide", "usb"] = "virtio"
    cache: Literal["none", "writethrough", "writeback", "directsync", "unsafe", "default"] | None = None
    readonly: bool = False
    live: bool | None = Field(None, description=LIVE)
    config: bool | None = Field(None, description=CONFIG)


class DiskAttached(Out):
    name: str
    action: str
    target: str
    path: str
    format: str
    live: bool
    config: bool


class AttachNic(BaseModel):
    network: str | None = Field(None, description="libvirt network name (give this or `bridge`)")
    bridge: str | None = Field(None, description="host bridge name")
    model: Literal["virtio", "e1000e", "e1000", "rtl8139"] = "virtio"
    mac: str | None = Field(None, description="MAC address (default: a free 52:54:00:xx:xx:xx); one any other VM "
                                              "on the host uses is refused, naming that VM")
    live: bool | None = Field(None, description=LIVE)
    config: bool | None = Field(None, description=CONFIG)


class NicAttached(Out):
    name: str
    action: str
    mac: str
    network: str | None = None
    bridge: str | None = None
    model: str
    live: bool
    config: bool


@router.post("/disks", responses=NOT_FOUND)
def attach_disk(name: str, body: AttachDisk, request: Request,
                p: Principal = Depends(require("operator"))) -> DiskAttached:
    """Attach a pool volume (or, for admins, a host file or block device) as a disk."""
    from kvmkit.service.vms import devices

    check_vm_visible(p, name)
    require_unrestricted(p, "attach storage")
    st = state(request)
    conn = st.hv.get()
    # host paths, and existing volumes (another VM's disk: two writers; anyone's volume: adopted, then deleted
    # with the VM) are the admin's to attach
    policy.check_disk(p, SimpleNamespace(path=body.path, pool=body.pool, volume=body.volume, device="disk"),
                      "body", conn, vm=name)
    domain(conn, name)
    with st.runner.hold(f"vm:{name}", "vm.disk.attach"):
        out = devices.attach_disk(conn, name, fmt=body.format, path=body.path, pool=body.pool, volume=body.volume,
                                  target=body.target, bus=body.bus, cache=body.cache, readonly=body.readonly,
                                  live=body.live, config=body.config)
    return DiskAttached.model_validate(out)


class ResizeDisk(BaseModel):
    size: str | int = Field(description="the new size, e.g. 20G or 20480 (MiB)")
    allow_shrink: bool = Field(False, description="allow a smaller size: only while the VM is shut off; data past "
                                                  "the new end is lost")


class DiskResized(Out):
    name: str
    action: str
    target: str
    path: str
    format: str
    old_capacity: int = Field(description="bytes before")
    capacity: int = Field(description="bytes now (whole 512-byte sectors)")
    live: bool = Field(description="resized in the running VM (blockResize): the guest sees the new size at once")
    changed: bool
    pool: str | None = Field(None, description="the pool of the disk's image, when it is a pool volume")
    volume: str | None = None
    warning: str | None = None


@router.post("/disks/{target}/resize", responses=NOT_FOUND)
def resize_disk(name: str, target: str, body: ResizeDisk, request: Request,
                p: Principal = Depends(require("operator"))) -> DiskResized:
    """Resize a disk through its VM: live on a running VM (growing only; the guest sees the new size at
    once), else its image (pool volume or file; shrinking with ``allow_shrink``). Refused for a disk whose image
    another VM, a linked clone or a template depends on."""
    from kvmkit.service.vms import disk_resize

    check_vm_visible(p, name)
    require_unrestricted(p, "resize storage")
    st = state(request)
    conn = st.hv.get()
    domain(conn, name)
    with st.runner.hold(f"vm:{name}", "vm.disk.resize"):
        out = disk_resize.resize_disk(conn, name, target, body.size, allow_shrink=body.allow_shrink)
    return DiskResized.model_validate(out)


def _detach(request: Request, p: Principal, name: str, kind: str, key: str, live: bool | None,
            config: bool | None, timeout: float) -> JSONResponse:
    from kvmkit.api.jobs.vms import detach_body

    check_vm_visible(p, name)
    st = state(request)
    not_busy(st, f"vm:{name}")
    domain(st.hv.get(), name)
    return submit(request, st, p, f"vm.{kind}.detach", f"vm:{name}",
                  detach_body(st.hv.get, name, kind, key, live, config, timeout), {"vm": name, kind: key})


@router.delete("/disks/{target}", status_code=202, responses=ACCEPTED)
def detach_disk(name: str, target: str, request: Request, live: bool | None = Query(None, description=LIVE),
                config: bool | None = Query(None, description=CONFIG),
                timeout: float = Query(30, ge=0, le=600, description="seconds to wait for the guest to release it"),
                p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Detach a disk by its guest device name (its image stays)."""
    require_unrestricted(p, "detach storage")
    return _detach(request, p, name, "disk", target, live, config, timeout)


@router.post("/nics", responses=NOT_FOUND)
def attach_nic(name: str, body: AttachNic, request: Request,
               p: Principal = Depends(require("operator"))) -> NicAttached:
    """Attach a network interface on a libvirt network or a host bridge."""
    from kvmkit.service.vms import devices

    check_vm_visible(p, name)
    # a host bridge puts the guest on whatever LAN the bridge joins: the admin's to decide
    policy.check_nic(p, SimpleNamespace(type="bridge" if body.bridge else "network",
                                        source=body.bridge or body.network), "body")
    st = state(request)
    conn = st.hv.get()
    domain(conn, name)
    with st.runner.hold(f"vm:{name}", "vm.nic.attach"):
        out = devices.attach_nic(conn, name, network=body.network, bridge=body.bridge, model=body.model,
                                 mac=body.mac, live=body.live, config=body.config)
    return NicAttached.model_validate(out)


@router.delete("/nics/{mac}", status_code=202, responses=ACCEPTED)
def detach_nic(name: str, mac: str, request: Request, live: bool | None = Query(None, description=LIVE),
               config: bool | None = Query(None, description=CONFIG),
               timeout: float = Query(30, ge=0, le=600, description="seconds to wait for the guest to release it"),
               p: Principal = Depends(require("operator"))) -> JSONResponse:
    """Detach a network interface by its MAC address."""
    return _detach(request, p, name, "nic", mac, live, config, timeout)
