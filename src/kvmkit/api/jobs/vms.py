"""Task bodies for VM operations, and the start-up recovery of an interrupted VM create.

Create: the task's id goes into the domain's kvmkit metadata (``spec.metadata["task"]``); the intent
(VM name, pools of new disks) is journalled before anything is made. If the server dies mid-create,
recovery removes the domain carrying this task id and the volumes the create made: volumes named after
the VM that no domain uses. A domain of that name that does not carry the task id is never touched.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import libvirt
from lxml import etree

from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.tasks.runner import RECOVERY, TaskContext

log = logging.getLogger("kvmkit.api")
META_NS = "https://kvmkit.dev/xmlns/vm/1"
ACTIONS = ("start", "shutdown", "reboot", "destroy", "suspend", "resume")


def create_body(conn_get: Any, spec: Any, start: bool) -> Any:
    """Create (and start) in one service call: a failed start undoes the definition too. The task thread
    uses its own libvirt connection so ten creates at once do not queue on one connection."""
    def body(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.vms.create import create_vm  # type: ignore[import-not-found,unused-ignore]

        conn = worker_connection(conn_get())
        ctx.step("create", 5, f"creating VM {spec.name}", vm=spec.name)

        def progress(*args: Any, **kwargs: Any) -> None:
            text = " ".join(str(a) for a in args) or " ".join(f"{k}={v}" for k, v in kwargs.items())
            if text.startswith("starting VM"):  # defined: the VM exists from here on
                ctx.step("defined", 70, f"VM {spec.name} defined")
                ctx.step("start", 80, f"starting VM {spec.name}")
                return
            ctx.step(_step_name(text), None, text[:200] or "progress", info=text[:500])

        result = create_vm(conn, spec, start=start, progress=progress)
        if not start:
            ctx.step("defined", 70, f"VM {spec.name} defined")
        return result if isinstance(result, dict) else {"name": spec.name}

    return body


# create_vm's progress messages -> journal step names (an interrupted create's error names the step)
_CREATE_STEPS = (("building the micro-guest", "micro-guest"), ("provisioning", "provision"),
                 ("writing the cloud-init seed", "cloud-init-seed"), ("creating volume", "create-volume"),
                 ("defining VM", "define"))


def _step_name(text: str) -> str:
    return next((name for start, name in _CREATE_STEPS if text.startswith(start)), "create-progress")


def action_body(conn_get: Any, name: str, action: str, *, timeout: float = 60, force: bool = False) -> Any:
    def body(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        ctx.step(action, 10, f"{action} VM {name}", vm=name)
        fn = getattr(vm_lifecycle, action)
        if action == "shutdown":
            return fn(conn_get(), name, timeout=timeout, force=force)
        return fn(conn_get(), name)

    return body


def delete_body(conn_get: Any, name: str, storage: bool, force: bool) -> Any:
    def body(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        ctx.step("delete", 10, f"deleting VM {name}", vm=name, storage=storage)
        return vm_lifecycle.delete(conn_get(), name, storage=storage, force=force)

    return body


# --- recovery --------------------------------------------------------------------------------------

def _task_of(dom: Any) -> str | None:
    try:
        xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, META_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    except libvirt.libvirtError:
        return None
    el = etree.fromstring(xml.encode()).find(f"{{{META_NS}}}task")
    if el is None:
        el = etree.fromstring(xml.encode()).find("task")
    return el.text if el is not None else None


def _paths_in_use(conn: Any) -> set[str]:
    used = set()
    for dom in conn.listAllDomains():
        with contextlib.suppress(libvirt.libvirtError):
            root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
            used |= {el.get("file") or el.get("dev") for el in root.iterfind("./devices/disk/source")}
    return {p for p in used if p}


def _disk_paths(dom: Any) -> list[str]:
    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    return [p for p in (el.get("file") for el in root.iterfind("./devices/disk[@device='disk']/source")) if p]


def _owned_by_vm(vol_name: str, vm: str) -> bool:
    base = vol_name.rsplit(".", 1)[0] if "." in vol_name else vol_name
    return base == vm or any(vol_name.startswith(vm + sep) for sep in ("-", "_", "."))


def _made_after(path: str, created_at: str | None) -> bool | None:
    """Whether the file at ``path`` appeared after the task started (None: cannot tell)."""
    import os
    from datetime import datetime

    if not created_at:
        return None
    try:
        start = datetime.fromisoformat(created_at).timestamp()
        return os.stat(path).st_ctime >= start - 2
    except (OSError, ValueError):
        return None


def recover_create(conn: Any, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    """Undo an interrupted VM create: the domain carrying this task id, then the volumes it made."""
    intent = task.get("intent") or {}
    vm = intent.get("vm") or task["target"].removeprefix("vm:")
    report: list[str] = []
    candidates: list[str] = []
    try:
        dom = conn.lookupByName(vm)
    except libvirt.libvirtError:
        dom = None
    if dom is not None:
        if _task_of(dom) == task["id"]:
            candidates = _disk_paths(dom)
            with libvirt_errors(f"removing half-created VM {vm}"):
                if dom.isActive():
                    dom.destroy()
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                                  | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
            report.append(f"undefined half-created VM {vm}")
        else:
            report.append(f"kept VM {vm}: it was not made by this task")
    in_use = _paths_in_use(conn)
    pools = set(intent.get("pools") or []) or None
    for pool in conn.listAllStoragePools():
        if not pool.isActive() or (pools is not None and pool.name() not in pools):
            continue
        with contextlib.suppress(libvirt.libvirtError):
            pool.refresh(0)
        for vol in pool.listAllVolumes():
            path = vol.path()
            if path in in_use:
                continue
            if path in candidates or task["id"] in vol.name():
                pass
            elif _owned_by_vm(vol.name(), vm):
                made = _made_after(path, task.get("created_at"))
                if made is None:
                    report.append(f"left unused volume {path} (named after {vm}; cannot tell whether this task "
                                  "made it): check and delete it by hand")
                    continue
                if not made:
                    continue
            else:
                continue
            try:
                vol.delete(0)
                report.append(f"deleted orphan volume {pool.name()}/{vol.name()}")
            except libvirt.libvirtError as err:
                report.append(f"could not delete orphan volume {path}: {err.get_error_message()}; "
                              "remove it by hand")
    return report


def register_recovery() -> None:
    RECOVERY["vm.create"] = recover_create


def detach_body(conn_get: Any, name: str, kind: str, key: str, live: bool | None, config: bool | None,
                timeout: float) -> Any:
    """Detach a disk (``key`` = target) or NIC (``key`` = MAC); a live detach waits for the guest."""
    def body(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.vms import devices

        conn = worker_connection(conn_get())
        ctx.step(f"detach-{kind}", 10, f"detaching {kind} {key} from VM {name}", vm=name, device=key)
        ctx.check_cancel()
        fn = devices.detach_disk if kind == "disk" else devices.detach_nic
        return fn(conn, name, key, live=live, config=config, timeout=timeout)

    return body
