"""Where the VM is after a migration ended, asked of both hosts, and the clean-up after a failure: a
half-made copy on the destination removed while the source still has the VM, the volumes made there deleted,
and an error that says where the VM runs now."""

from __future__ import annotations

from typing import Any

import libvirt

from kvmkit.errors import KvmkitError
from kvmkit.service.migration.model import Endpoint, MigrationFailed, Plan


def _state_on(conn: libvirt.virConnect, uuid: str) -> dict[str, Any]:
    try:
        dom = conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return {"defined": False, "state": None, "persistent": False}
        return {"defined": None, "state": None, "persistent": None, "error": err.get_error_message()}
    try:
        from kvmkit.service.vms.domains import state_key

        return {"defined": True, "state": state_key(dom), "persistent": bool(dom.isPersistent()),
                "active": bool(dom.isActive())}
    except (libvirt.libvirtError, KvmkitError) as err:
        return {"defined": True, "state": None, "persistent": None, "error": str(err)}


def locate(src: Endpoint, dst: Endpoint, uuid: str) -> dict[str, Any]:
    """The VM as each host sees it now: ``{source: {...}, dest: {...}}`` (``defined`` None: host not asked)."""
    out = {}
    for key, end in (("source", src), ("dest", dst)):
        try:
            out[key] = {"host": end.name, **_state_on(end.conn, uuid)}
        except Exception as err:  # the host went away
            out[key] = {"host": end.name, "defined": None, "state": None, "error": str(err)}
    return out


def _remove_dest_copy(dst: Endpoint, uuid: str) -> str | None:
    """Remove a half-made copy on the destination (same UUID), while the source still has the VM."""
    try:
        dom = dst.conn.lookupByUUIDString(uuid)
    except libvirt.libvirtError:
        return None
    try:
        if dom.isActive():
            dom.destroy()
        if dom.isPersistent():
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
        return f"removed the half-made copy on host {dst.name}"
    except libvirt.libvirtError as err:
        return f"could not remove the copy on host {dst.name}: {err.get_error_message()}"


def after_failure(src: Endpoint, dst: Endpoint, plan: Plan, err: BaseException, made: list[str]) -> dict[str, Any]:
    from kvmkit.service.migration.volumes import delete_files
    from kvmkit.service.tasks.runner import Cancelled

    where = locate(src, dst, plan.uuid)
    source, dest = where["source"], where["dest"]
    actions: list[str] = []
    if source.get("defined") and dest.get("defined") and not (dest.get("active") and not source.get("active")):
        note = _remove_dest_copy(dst, plan.uuid)
        if note:
            actions.append(note)
        where = locate(src, dst, plan.uuid)
        source, dest = where["source"], where["dest"]
    if dest.get("defined") is False and made:
        deleted, kept = delete_files(dst.conn, made)
        if deleted:
            actions.append(f"removed {len(deleted)} volume(s) made on host {dst.name}")
        if kept:
            actions.append("left on host " + dst.name + ": " + "; ".join(kept))
    where["actions"] = actions
    if dest.get("active") and source.get("defined") is False:
        return {"vm": plan.vm, "from": src.name, "to": dst.name, "warning": f"the migration reported {err} but "
                f"VM '{plan.vm}' runs on host {dst.name} and is gone from host {src.name}", "where": where,
                "mode": plan.mode, "transport": plan.transport, "notes": plan.notes, "checks":
                [c.to_dict() for c in plan.checks]}
    kept_on = _where_text(plan, src, dst, where)
    aborted = isinstance(err, libvirt.libvirtError) and err.get_error_code() == libvirt.VIR_ERR_OPERATION_ABORTED
    if aborted or isinstance(err, Cancelled | KeyboardInterrupt):
        raise Cancelled(f"migration of VM '{plan.vm}' to host {dst.name} cancelled; {kept_on}") from err
    if isinstance(err, libvirt.libvirtError):
        message = err.get_error_message() or str(err)
    elif isinstance(err, KvmkitError):
        message = err.message
    else:
        message = f"{type(err).__name__}: {err}"
    raise MigrationFailed(f"migration of VM '{plan.vm}' from host {src.name} to host {dst.name} failed: {message}; "
                          f"{kept_on}", _failure_hint(message, plan, dst), where) from err


def _where_text(plan: Plan, src: Endpoint, dst: Endpoint, where: dict[str, Any]) -> str:
    source, dest = where["source"], where["dest"]
    if source.get("defined") and dest.get("defined") is False:
        return f"VM '{plan.vm}' is {source.get('state')} on host {src.name} and defined there only"
    if source.get("defined") and dest.get("defined") is None:
        return (f"VM '{plan.vm}' is {source.get('state')} on host {src.name}; host {dst.name} did not answer "
                f"(its libvirtd removes an unfinished incoming copy when it starts again)")
    return (f"where VM '{plan.vm}' is now: host {src.name}: {source.get('state') or source.get('error')}, "
            f"host {dst.name}: {dest.get('state') or dest.get('error') or 'not defined'}")


def _failure_hint(message: str, plan: Plan, dst: Endpoint) -> str:
    low = message.lower()
    if "connect" in low or ("unable to" in low and "server" in low):
        return (f"host {plan.source}'s libvirtd must reach {dst.uri} itself (peer-to-peer): check the network and, "
                "for qemu+ssh/qemu+tls, that host's credentials for the destination")
    if "cache" in low:
        return "use cache='none' (or directsync) for disks on shared storage"
    if "shared storage" in low or "unsafe" in low:
        return "copy the disks with --copy-storage, or put them on storage both hosts share"
    return "see the message; `kvmkit vm migrate NAME --to HOST --check` repeats the pre-checks"
