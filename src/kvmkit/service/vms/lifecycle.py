"""Power and life of existing VMs: start, shutdown, reboot, destroy, suspend, resume, delete, rename.

Each function takes a libvirt connection and a VM name, refuses with InvalidState (saying what to do
instead) when the operation makes no sense in the VM's current state, and returns a dict summary.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import libvirt

from kvmkit.errors import Conflict, InvalidInput, InvalidState, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain, state_key, state_of
from kvmkit.spec.vm import SERIAL_LOG_DIR


def _summary(dom: libvirt.virDomain, action: str, **extra: Any) -> dict[str, Any]:
    return {"name": dom.name(), "action": action, "state": state_key(dom), **extra}


def _refuse(action: str, dom: libvirt.virDomain, state: str, fix: str) -> InvalidState:
    return InvalidState(f"cannot {action} VM {dom.name()}: it is {state}; {fix}")


def start(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Boot a shut-off VM (restoring its managed save image if it has one). A definition whose serial log
    would be truncated (no ``append='on'``: an older kvmkit or another tool wrote it) gets ``append='on'``
    first; the summary's ``log_append_set`` names the files."""
    dom = domain(conn, name)
    state = state_of(dom)
    if state == "paused":
        raise _refuse("start", dom, state, f"resume it with `kvmkit vm resume {name}`")
    if dom.isActive():
        raise _refuse("start", dom, state, "it is already started")
    from kvmkit.host.hugepages import check_domain_can_start
    from kvmkit.service.vms.serial_log import keep_history

    check_domain_can_start(conn, dom)
    restored = bool(dom.hasManagedSaveImage(0))
    appended = keep_history(conn, dom)
    with libvirt_errors(f"starting VM {name}"):
        dom.create()
    return _summary(dom, "start", restored_from_managed_save=restored,
                    **({"log_append_set": appended} if appended else {}))


def _wait_shut_off(dom: libvirt.virDomain, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if not dom.isActive():
                return True
        except libvirt.libvirtError as err:  # a transient domain vanishes once it stops
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return True
            raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def shutdown(conn: libvirt.virConnect, name: str, *, timeout: float = 60, force: bool = False) -> dict[str, Any]:
    """Press the ACPI power button and wait up to ``timeout`` s for the VM to be shut off; when the guest
    ignores the button and its guest agent is connected, ask the agent to power off and wait up to
    ``timeout`` s again.

    With ``force`` the VM is destroyed (power cut) when the guest has not stopped in time; without it a
    timeout is an OperationFailed error that says so (the VM keeps running). The result's ``method`` says
    which way it went: acpi, agent or forced. A cloud-init seed marked for eject is ejected first when the
    agent reports cloud-init done (service/vms/seed.py).
    """
    from kvmkit.service.vms import agent, seed

    dom = domain(conn, name)
    state = state_of(dom)
    if not dom.isActive():
        raise _refuse("shut down", dom, state, "it is already stopped")
    if timeout < 0:
        raise InvalidInput(f"invalid timeout {timeout}: it must be 0 or more seconds")
    began = time.monotonic()

    def done(method: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "action": "shutdown", "state": "shut-off", "forced": method == "forced",
                "method": method, "seconds": round(time.monotonic() - began, 1), **extra}

    if state == "paused" and not force:
        raise _refuse("shut down", dom, state, f"a paused guest cannot react to the power button: resume it "
                      f"first (`kvmkit vm resume {name}`) or pass --force to power it off")
    tried_agent = False
    if state != "paused":
        ejected = seed.eject_if_done(conn, dom)
        extra = {"seed_ejected": ejected["volume"]} if ejected else {}
        with libvirt_errors(f"sending the ACPI power button to VM {name}"):
            _with_fallback(lambda: dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN), dom.shutdown)
        if _wait_shut_off(dom, timeout):
            return done("acpi", **extra)
        if agent.connected(dom):  # the guest ignored the button: its agent can still power it off
            tried_agent = True
            with contextlib.suppress(libvirt.libvirtError):
                dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
                if _wait_shut_off(dom, timeout):
                    return done("agent", **extra)
        if not force:
            also = " and the guest agent's power-off" if tried_agent else " (no guest agent connected)"
            raise OperationFailed(
                f"VM {name} did not shut down within {timeout:g} s after the ACPI power button{also}; it is still "
                f"{state_of(dom)}",
                hint="the guest may ignore ACPI (no acpid?); wait longer with --timeout, or add --force to power "
                     "it off after the timeout")
    with libvirt_errors(f"powering off VM {name}"):
        dom.destroy()
    return done("forced", agent_tried=tried_agent)


def reboot(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Ask the guest to reboot: through the guest agent when it is connected (it does not depend on the guest
    handling ACPI), else by ACPI (libvirt presses the power button and starts the VM again once it is off).

    An ACPI reboot is not tried first: libvirt would keep a pending "start again" mark for a guest that
    ignores the button, turning its next real power-off into a restart."""
    from kvmkit.service.vms import agent, seed

    dom = domain(conn, name)
    state = state_of(dom)
    if state != "running":
        fix = f"resume it first (`kvmkit vm resume {name}`)" if state == "paused" else \
            f"start it with `kvmkit vm start {name}`"
        raise _refuse("reboot", dom, state, fix)
    ejected = seed.eject_if_done(conn, dom)
    extra: dict[str, Any] = {"seed_ejected": ejected["volume"]} if ejected else {}
    if agent.connected(dom):
        try:
            dom.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT)
            return _summary(dom, "reboot", method="agent", **extra)
        except libvirt.libvirtError:
            pass  # the agent did not answer: ACPI then
    with libvirt_errors(f"rebooting VM {name}"):
        _with_fallback(lambda: dom.reboot(libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN), lambda: dom.reboot(0))
    return _summary(dom, "reboot", method="acpi", **extra)


def destroy(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Power the VM off at once (like pulling the plug); its definition and disks stay."""
    dom = domain(conn, name)
    if not dom.isActive():
        raise _refuse("destroy", dom, state_of(dom), "it is already stopped")
    with libvirt_errors(f"powering off VM {name}"):
        dom.destroy()
    if not dom.isPersistent():
        return {"name": name, "action": "destroy", "state": "gone (transient VM)"}
    return _summary(dom, "destroy")


def suspend(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Pause the VM's vCPUs (it keeps its memory); resume continues where it stopped."""
    dom = domain(conn, name)
    state = state_of(dom)
    if state != "running":
        fix = {"paused": "it is already paused", "shut off": "start it first"}.get(state, "wait until it runs")
        raise _refuse("suspend", dom, state, fix)
    with libvirt_errors(f"suspending VM {name}"):
        dom.suspend()
    return _summary(dom, "suspend")


def resume(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Continue a paused VM."""
    dom = domain(conn, name)
    state = state_of(dom)
    if state != "paused":
        fix = "only a paused VM can be resumed" if state == "running" else f"start it with `kvmkit vm start {name}`"
        raise _refuse("resume", dom, state, fix)
    with libvirt_errors(f"resuming VM {name}"):
        dom.resume()
    return _summary(dom, "resume")


def delete(conn: libvirt.virConnect, name: str, *, storage: bool = False, force: bool = False) -> dict[str, Any]:
    """Undefine the VM with its NVRAM, managed-save image, snapshot and checkpoint metadata.

    A running VM is refused unless ``force`` (then it is destroyed first). With ``storage`` its disks
    (volumes or files) go too, except any that another domain uses or that backs another volume: those
    are kept and named in the summary's ``kept`` list. The kvmkit serial log is removed with --storage.
    """
    from kvmkit.service.vms.storage_use import storage_plan

    dom = domain(conn, name)
    if dom.isActive() and not force:
        raise _refuse("delete", dom, state_of(dom), f"shut it down first (`kvmkit vm shutdown {name}`) or pass "
                      "--force to power it off and delete it")
    delete_paths, kept = storage_plan(conn, dom) if storage else ([], [])
    serial_logs = _kvmkit_serial_logs(dom) if storage else []
    if dom.isActive():
        with libvirt_errors(f"powering off VM {name}"):
            dom.destroy()
    if _exists(conn, name) and dom.isPersistent():
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                 | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        basic = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        with libvirt_errors(f"undefining VM {name}"):
            _with_fallback(lambda: dom.undefineFlags(flags), lambda: dom.undefineFlags(basic))
    deleted, failed = [], []
    for path in delete_paths:
        try:
            _delete_storage(conn, path)
            deleted.append(path)
        except (OSError, libvirt.libvirtError) as err:
            failed.append({"path": path, "error": str(err)})
    for log in serial_logs:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(log)
    result = {"name": name, "action": "delete", "state": "deleted", "deleted": deleted, "kept": kept,
              "failed": failed}
    if failed:
        raise OperationFailed(f"VM {name} was undefined but {len(failed)} disk(s) could not be deleted: "
                              + "; ".join(f"{f['path']}: {f['error']}" for f in failed),
                              hint="remove them by hand (`kvmkit volume delete POOL NAME`) once the cause is fixed")
    return result


def _with_fallback(first: Any, second: Any) -> None:
    """Run ``first``; when the driver does not support its flags (older libvirt, other drivers), ``second``."""
    try:
        first()
    except libvirt.libvirtError as err:
        if err.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT,
                                        libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
            raise
        second()


def _exists(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError:
        return False


def _kvmkit_serial_logs(dom: libvirt.virDomain) -> list[str]:
    from lxml import etree

    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    files = {el.get("file") for el in root.iterfind("./devices/serial/log") if el.get("file")}
    return sorted(f for f in files if os.path.dirname(os.path.abspath(f)) == SERIAL_LOG_DIR)


def _delete_storage(conn: libvirt.virConnect, path: str) -> None:
    try:
        vol = conn.storageVolLookupByPath(path)
    except libvirt.libvirtError:
        vol = None
    if vol is not None:
        vol.delete(0)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def rename(conn: libvirt.virConnect, old: str, new: str) -> dict[str, Any]:
    """Rename a shut-off VM; its disks, UUID and configuration stay. A kvmkit serial log path follows."""
    from kvmkit.spec.common import validate_name

    validate_name(new, "new name")
    dom = domain(conn, old)
    if old == new:
        raise InvalidInput(f"VM {old} already has the name {new}", hint="give a different new name")
    if _exists(conn, new):
        raise Conflict(f"cannot rename VM {old} to {new}: a VM named {new} exists already",
                       hint="pick another name, or delete that VM first")
    if dom.isActive():
        raise _refuse("rename", dom, state_of(dom), f"shut it down first (`kvmkit vm shutdown {old}`)")
    if not dom.isPersistent():
        raise InvalidState(f"cannot rename VM {old}: it is transient (not defined)")
    with libvirt_errors(f"renaming VM {old} to {new}"):
        dom.rename(new, 0)
    dom = conn.lookupByName(new)
    _move_serial_log(conn, dom, old, new)
    return {"name": new, "old_name": old, "action": "rename", "state": state_key(dom), "uuid": dom.UUIDString()}


def _move_serial_log(conn: libvirt.virConnect, dom: libvirt.virDomain, old: str, new: str) -> None:
    """VMs created by kvmkit log to /var/log/kvmkit/<name>.serial.log: keep that convention after a rename."""
    from lxml import etree

    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE).encode())
    old_log, new_log = f"{SERIAL_LOG_DIR}/{old}.serial.log", f"{SERIAL_LOG_DIR}/{new}.serial.log"
    changed = False
    for el in root.iterfind("./devices/serial/log"):
        if el.get("file") == old_log:
            el.set("file", new_log)
            changed = True
    if not changed:
        return
    with libvirt_errors(f"updating the serial log path of VM {new}"):
        conn.defineXML(etree.tostring(root, encoding="unicode"))
    if os.path.exists(old_log) and not os.path.exists(new_log):
        with contextlib.suppress(OSError):
            os.rename(old_log, new_log)
