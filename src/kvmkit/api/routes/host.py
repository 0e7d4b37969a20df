"""/api/v1/host: this host's readiness, topology and tuning — ``kvmkit host check|info|ksm|hugepages|iosched|
profile|plan|prepare``. Viewers read; admins change.

KSM, huge pages, IO schedulers and tuning profiles live in the sysfs/procfs of the machine libvirt runs on,
so the server reads and changes them only when its libvirt is local (``qemu:///system``); for a remote or
test libvirt those routes answer 409 (nothing on this machine is touched), and ``info`` says what it cannot
show. Every change answers what it changed (before -> after); a profile records what it replaced, so
``rollback`` restores it exactly.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from kvmkit.api.deps import require, state
from kvmkit.api.driver_limits import LIMITS
from kvmkit.api.models import host as m
from kvmkit.api.models.responses import Responses
from kvmkit.errors import InvalidInput, InvalidState
from kvmkit.service.access.auth import Principal

router = APIRouter(prefix="/host", tags=["host"], dependencies=[LIMITS])
LOCAL_ONLY: Responses = {409: {"description": "the server's libvirt is not on this machine (its sysfs is not "
                                              "this one's)"}}
CHANGE: Responses = {**LOCAL_ONLY, 422: {"description": "an invalid value (the answer names the field and the "
                                                        "valid ones)"}}


def _local(request: Request, what: str) -> Any:
    """The connection, when it talks to this machine's hypervisor; else 409 saying why nothing was done."""
    from kvmkit.host.topology import is_local

    conn = state(request).hv.get()
    if not is_local(conn):
        raise InvalidState(f"{what} is read from this machine's sysfs, but this server manages {conn.getURI()}",
                           hint="use the kvmkit server (or `kvmkit host ...`) on the host libvirt runs on")
    return conn


@router.get("/check")
def check(request: Request, refresh: bool = Query(False, description="probe KVM again instead of the cached answer"),
          p: Principal = Depends(require("viewer"))) -> m.HostCheck:
    """Readiness: CPU flags, /dev/kvm usable, modules, libvirtd, QEMU, default network and pool, KSM, huge
    pages, IOMMU (``ready`` is false when a check fails). ``refresh`` (admins) boots the KVM probe again."""
    from kvmkit.host.check import report
    from kvmkit.host.virt_type import probe_kvm
    from kvmkit.service.access.auth import Forbidden

    if refresh and not p.at_least("admin"):
        raise Forbidden(f"user '{p.name}' (role {p.role}) may not re-run the KVM probe (it boots a VM)",
                        hint="leave refresh out to get the cached answer, or ask an admin")
    if refresh:
        probe_kvm(refresh=True)
    return m.HostCheck.model_validate(report(state(request).hv.uri))


@router.post("/prepare", responses=LOCAL_ONLY)
def prepare(request: Request, _p: Principal = Depends(require("admin"))) -> m.Prepared:
    """Create, start and autostart the 'default' NAT network and 'default' dir pool (idempotent)."""
    from kvmkit.host.defaults import prepare as do_prepare

    return m.Prepared(changed=do_prepare(state(request).hv.get()))


@router.post("/repair", responses=CHANGE)
def repair(body: m.RepairRequest, request: Request, _p: Principal = Depends(require("admin"))) -> m.Repaired:
    """Clear libvirt's stale security records (``trusted.libvirt.security.*`` left on files no running VM
    uses, which make the next VM using the file fail) and give each file back to the owner libvirt recorded;
    ``kvmkit host repair``. Files running VMs use are never touched."""
    from kvmkit.service.host.repair import repair as do_repair

    conn = _local(request, "libvirt's security records")
    return m.Repaired.model_validate(do_repair(conn, dry_run=body.dry_run, paths=body.paths).to_dict())


@router.get("/info")
def info(request: Request, _p: Principal = Depends(require("viewer"))) -> m.HostInfo:
    """CPUs, NUMA nodes (CPUs and memory), caches, memory, KSM, THP, huge pages, IO schedulers, and where the
    running VMs run."""
    from kvmkit.host.topology import host_info
    from kvmkit.service.vms.pinning import placements

    conn = state(request).hv.get()
    return m.HostInfo.model_validate({**host_info(conn), "vms": placements(conn)})


@router.get("/ksm", responses=LOCAL_ONLY)
def ksm_status(request: Request, _p: Principal = Depends(require("viewer"))) -> m.Ksm:
    """KSM's state, knobs and savings (pages_sharing x page size)."""
    from kvmkit.host import ksm

    _local(request, "KSM")
    return m.Ksm.model_validate(ksm.status())


@router.patch("/ksm", responses=CHANGE)
def ksm_change(body: m.KsmChange, request: Request, _p: Principal = Depends(require("admin"))) -> m.Ksm:
    """Enable (run=1), disable (run=0) or unmerge (run=2), and/or set sleep_millisecs and pages_to_scan."""
    from kvmkit.host import ksm

    _local(request, "KSM")
    run = {"enable": 1, "disable": 0, "unmerge": 2}.get(body.action or "")
    if run is None and body.sleep_ms is None and body.pages_to_scan is None:
        raise InvalidInput("nothing to change", hint="give action (enable, disable, unmerge), sleep_ms or "
                           "pages_to_scan")
    with state(request).runner.hold("host", "host.ksm"):
        return m.Ksm.model_validate(ksm.configure(run=run, sleep_ms=body.sleep_ms, pages_to_scan=body.pages_to_scan))


@router.get("/hugepages", responses=LOCAL_ONLY)
def hugepages(request: Request, _p: Principal = Depends(require("viewer"))) -> m.HugePages:
    """Huge pages per size: total, free, reserved, surplus, available."""
    from kvmkit.host import hugepages as hp

    _local(request, "huge pages")
    return m.HugePages(pools=[m.HugePool.model_validate(p) for p in hp.pools()], default_size_kib=hp.default_size_kib())


@router.put("/hugepages", responses=CHANGE)
def hugepages_allocate(body: m.HugePagesChange, request: Request,
                       _p: Principal = Depends(require("admin"))) -> m.HugePagesAllocated:
    """Have ``count`` 2 MiB pages now (the answer says how many the kernel gave), or get the kernel command
    line for 1 GiB pages."""
    from kvmkit.host import hugepages as hp
    from kvmkit.host import sysfs

    _local(request, "huge pages")
    total_kib = sysfs.meminfo().get("MemTotal", 0)
    if body.size == "2M" and body.count * hp.size_kib(body.size) > total_kib:
        raise InvalidInput(f"{body.count} pages of {body.size} are more than this host's memory "
                           f"({total_kib // 1024} MiB)", hint="ask for fewer pages")
    with state(request).runner.hold("host", "host.hugepages"):
        return m.HugePagesAllocated.model_validate(hp.allocate(body.count, body.size))


@router.get("/iosched", responses=LOCAL_ONLY)
def io_schedulers(request: Request, _p: Principal = Depends(require("viewer"))) -> list[m.IoScheduler]:
    """Every block device's IO scheduler and the ones it offers."""
    from kvmkit.host import iosched

    _local(request, "IO schedulers")
    return [m.IoScheduler.model_validate(d) for d in iosched.list_all()]


@router.get("/iosched/{device}", responses={**LOCAL_ONLY, 404: {"description": "no such block device"}})
def io_scheduler(device: str, request: Request, _p: Principal = Depends(require("viewer"))) -> m.IoScheduler:
    from kvmkit.host import iosched

    _local(request, "IO schedulers")
    return m.IoScheduler.model_validate(iosched.get(device))


@router.put("/iosched/{device}", responses={**CHANGE, 404: {"description": "no such block device"}})
def io_scheduler_set(device: str, body: m.IoSchedulerChange, request: Request,
                     _p: Principal = Depends(require("admin"))) -> m.IoScheduler:
    """Select a device's IO scheduler (422 naming the available ones when it has no such scheduler)."""
    from kvmkit.host import iosched

    _local(request, "IO schedulers")
    with state(request).runner.hold("host", "host.iosched"):
        return m.IoScheduler.model_validate(iosched.set_scheduler(device, body.scheduler))


@router.get("/profiles")
def profiles_list(_p: Principal = Depends(require("viewer"))) -> list[m.ProfileItem]:
    """Built-in and user (/etc/kvmkit/profiles) tuning profiles, the applied one marked."""
    from kvmkit.host import profiles

    return [m.ProfileItem.model_validate(p) for p in profiles.list_profiles()]


@router.get("/profiles/{name}", responses={**LOCAL_ONLY, 404: {"description": "no such profile"}})
def profile_show(name: str, request: Request, _p: Principal = Depends(require("viewer"))) -> m.Profile:
    """A profile's settings (includes resolved) with this host's current value of each."""
    from kvmkit.host import profiles

    _local(request, "a profile's current values")
    return m.Profile.model_validate(profiles.show(name))


@router.post("/profiles/{name}/apply", responses={**CHANGE, 404: {"description": "no such profile"}})
def profile_apply(name: str, body: m.ProfileApply, request: Request,
                  _p: Principal = Depends(require("admin"))) -> m.ProfileApplied:
    """Apply a profile, recording every value it replaces (409 while another profile is applied)."""
    from kvmkit.host import profiles

    _local(request, "tuning profiles")
    with state(request).runner.hold("host", "host.profile"):
        return m.ProfileApplied.model_validate(profiles.apply(name, persist=body.persist))


@router.post("/profiles/rollback", responses={**LOCAL_ONLY, 404: {"description": "no profile is applied"}})
def profile_rollback(request: Request, _p: Principal = Depends(require("admin"))) -> m.ProfileRolledBack:
    """Restore every value the applied profile changed and remove its sysctl.d file."""
    from kvmkit.host import profiles

    _local(request, "tuning profiles")
    with state(request).runner.hold("host", "host.profile"):
        return m.ProfileRolledBack.model_validate(profiles.rollback())


def _vm_text(vm: m.PlanVM | str) -> str:
    """A VM size in the CLI's --vm form, so one parser (kvmkit.host.plan.parse_vm) reads both."""
    if isinstance(vm, str):
        return vm
    text = f"{vm.name + '=' if vm.name else ''}{vm.vcpus}c:{vm.memory}"
    if vm.sockets or vm.cores or vm.threads:
        sockets, threads = vm.sockets or 1, vm.threads or 1
        text += f":{sockets}x{vm.cores or max(1, vm.vcpus // (sockets * threads))}x{threads}"
    return text


@router.post("/plan", responses={422: {"description": "a VM size or topology that cannot be read"}})
def plan(body: m.PlanRequest, request: Request, _p: Principal = Depends(require("viewer"))) -> m.Plan:
    """NUMA-aware placement advice for the given VM sizes: which node and host CPUs each should use, with the
    XML (on this host, or on ``topology``). Computes only; changes nothing."""
    from kvmkit.host.plan import make_plan, parse_vm
    from kvmkit.host.topology import host_topology, topology_from_dict

    requests = [parse_vm(_vm_text(v), i) for i, v in enumerate(body.vms)]
    for r in requests:
        if r.vcpus > 4096:
            raise InvalidInput(f"VM {r.name}: {r.vcpus} vCPUs is more than a VM can have", hint="at most 4096")
    if body.topology is not None:
        topo = topology_from_dict(body.topology.model_dump(exclude_none=True), source="request")
    else:
        topo = host_topology(state(request).hv.get())
    return m.Plan.model_validate(make_plan(topo, requests, overcommit=body.overcommit))
