"""The QEMU guest agent of a VM: whether it is there, what it reports, and the raw commands libvirt lacks.

kvmkit adds the agent channel (``<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/>``)
to every VM by default. Whether an agent answers is read from the channel's ``state`` in the live XML
(libvirt sets ``connected`` while the guest holds the port open). What it reports comes from libvirt's
typed APIs: ``virDomainGetGuestInfo`` (OS, hostname, timezone, users, file systems, interfaces) and
``virDomainInterfaceAddresses(SRC_AGENT)``. Only ``guest-exec`` / ``guest-exec-status`` have no libvirt
API: :func:`command` sends those through ``libvirt_qemu.qemuAgentCommand`` and nothing else does.

This module sits in service/vms (not service/guests) because vm show, shutdown/reboot and the snapshot and
backup code use it, and service/guests builds on service/vms: the packages must not import each other.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import InvalidState, OperationFailed

AGENT = "org.qemu.guest_agent.0"
COMMAND_TIMEOUT_S = 10
_INFO_TYPES = (libvirt.VIR_DOMAIN_GUEST_INFO_OS | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME
               | libvirt.VIR_DOMAIN_GUEST_INFO_TIMEZONE | libvirt.VIR_DOMAIN_GUEST_INFO_USERS
               | libvirt.VIR_DOMAIN_GUEST_INFO_FILESYSTEM | libvirt.VIR_DOMAIN_GUEST_INFO_INTERFACES)


def channel_state(dom: libvirt.virDomain, xml: str | None = None) -> str:
    """'none' (no agent channel), 'off' (VM not running), 'connected' or 'disconnected'."""
    root = etree.fromstring((xml or dom.XMLDesc(0)).encode())
    for ch in root.iterfind("devices/channel"):
        tgt = ch.find("target")
        if tgt is not None and tgt.get("name") == AGENT:
            if root.get("id") is None:  # the live XML of a running domain carries its id
                return "off"
            return tgt.get("state") or "disconnected"
    return "none"


def connected(dom: libvirt.virDomain) -> bool:
    try:
        return channel_state(dom) == "connected"
    except libvirt.libvirtError:
        return False


def require_agent(dom: libvirt.virDomain, what: str) -> None:
    """InvalidState naming why ``what`` cannot go through the agent (not running, no channel, no agent)."""
    state = channel_state(dom)
    name = dom.name()
    if state == "off":
        raise InvalidState(f"cannot {what}: VM {name} is not running", hint=f"start it: kvmkit vm start {name}")
    if state == "none":
        raise InvalidState(f"cannot {what}: VM {name} has no guest-agent channel",
                           hint="add one (kvmkit adds it by default; `kvmkit vm xml` shows the definition) and "
                                "restart the VM")
    if state != "connected":
        raise InvalidState(f"cannot {what}: the guest agent of VM {name} is not connected",
                           hint="install and start qemu-guest-agent in the guest (it connects a few seconds after "
                                "boot); `kvmkit vm show` reports the agent state")


def _indexed(flat: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """guestInfo's 'fs.0.name', 'fs.0.disk.1.alias' ... -> [{'name': ..., 'disk': [{'alias': ...}]}]."""
    count = int(flat.get(f"{prefix}.count", 0) or 0)
    items = []
    for i in range(count):
        head = f"{prefix}.{i}."
        item: dict[str, Any] = {}
        for key, value in flat.items():
            if key.startswith(head):
                rest = key[len(head):]
                if "." not in rest and rest != "count":
                    item[rest.replace("-", "_")] = value
        for sub in {k[len(head):].split(".")[0] for k in flat if k.startswith(head) and k.endswith(".count")}:
            item[sub] = _indexed(flat, f"{prefix}.{i}.{sub}")
        items.append(item)
    return items


def parse_guest_info(flat: dict[str, Any]) -> dict[str, Any]:
    """virDomainGetGuestInfo's flat typed parameters as nested data."""
    os_info = {k[3:].replace("-", "_"): v for k, v in flat.items() if k.startswith("os.")}
    filesystems = [{"mountpoint": f.get("mountpoint"), "device": f.get("name"), "fstype": f.get("fstype"),
                    "total_bytes": f.get("total_bytes"), "used_bytes": f.get("used_bytes"),
                    "disks": [d.get("alias") or d.get("device") for d in f.get("disk", [])]}
                   for f in _indexed(flat, "fs")]
    interfaces = [{"name": i.get("name"), "mac": (i.get("hwaddr") or "").lower() or None,
                   "addresses": [{"type": a.get("type"), "addr": a.get("addr"), "prefix": a.get("prefix")}
                                 for a in i.get("addr", [])]}
                  for i in _indexed(flat, "if")]
    users = [{"name": u.get("name"), "domain": u.get("domain"), "login_time": u.get("login_time")}
             for u in _indexed(flat, "user")]
    return {"os": os_info or None, "hostname": flat.get("hostname"),
            "timezone": ({"name": flat.get("timezone.name"), "offset": flat.get("timezone.offset")}
                         if "timezone.offset" in flat else None),
            "users": users, "filesystems": filesystems, "interfaces": interfaces}


def guest_info(dom: libvirt.virDomain) -> dict[str, Any]:
    """What the agent reports (one libvirt call); OperationFailed when it does not answer."""
    try:
        flat = dom.guestInfo(_INFO_TYPES, 0)
    except libvirt.libvirtError as err:
        raise OperationFailed(f"the guest agent of VM {dom.name()} did not answer: {err.get_error_message()}",
                              hint="it may still be starting; try again in a few seconds") from err
    return parse_guest_info(flat)


def summary(dom: libvirt.virDomain, xml: str | None = None) -> dict[str, Any]:
    """The ``agent`` part of `vm show`: the channel state, and what the agent reports when it is connected."""
    state = channel_state(dom, xml)
    out: dict[str, Any] = {"configured": state != "none", "state": state, "connected": state == "connected"}
    if state == "connected":
        try:
            out.update(guest_info(dom))
        except OperationFailed as err:
            out["error"] = err.message
    return out


@contextmanager
def frozen(dom: libvirt.virDomain) -> Iterator[bool]:
    """Freeze the guest's file systems while the block runs when the agent answers (yields whether it did);
    thaws on every way out of the block (tried three times). A thaw that keeps failing is an error, unless
    the block is already failing with one of its own."""
    done = False
    if connected(dom):
        try:
            dom.fsFreeze(None, 0)
            done = True
        except libvirt.libvirtError:
            done = False  # the agent cannot freeze: the caller gets a crash-consistent copy and says so
    try:
        yield done
    finally:
        if done:
            _thaw(dom, failing=sys.exc_info()[0] is not None)


def _thaw(dom: libvirt.virDomain, *, failing: bool) -> None:
    last: libvirt.libvirtError | None = None
    for _ in range(3):
        try:
            dom.fsThaw(None, 0)
            return
        except libvirt.libvirtError as err:
            last = err
            time.sleep(0.5)
    if not failing and last is not None:
        raise OperationFailed(f"could not thaw the file systems of VM {dom.name()}: {last.get_error_message()}",
                              hint="the guest may be frozen: retry the thaw through the agent "
                                   "(guest-fsfreeze-thaw) or reboot the guest") from last


# --- raw agent commands (guest-exec has no libvirt API) ----------------------------------------------

def command(dom: libvirt.virDomain, execute: str, arguments: dict[str, Any] | None = None,
            timeout: int = COMMAND_TIMEOUT_S) -> Any:
    """Send one agent command and return its ``return`` value (OperationFailed naming the agent's error)."""
    import libvirt_qemu

    cmd: dict[str, Any] = {"execute": execute}
    if arguments is not None:
        cmd["arguments"] = arguments
    try:
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(cmd), timeout, 0)
    except libvirt.libvirtError as err:
        raise OperationFailed(f"guest agent of VM {dom.name()}: {execute} failed: {err.get_error_message()}",
                              hint="check that qemu-guest-agent runs in the guest and allows this command") from err
    try:
        return json.loads(reply)["return"]
    except (ValueError, KeyError, TypeError) as err:
        raise OperationFailed(f"guest agent of VM {dom.name()}: unexpected reply to {execute}: {reply[:200]}") from err


def exec_start(dom: libvirt.virDomain, argv: list[str], *, input_data: bytes | None = None,
               env: list[str] | None = None) -> int:
    """Start ``argv`` in the guest (guest-exec with captured output); return the guest's pid."""
    args: dict[str, Any] = {"path": argv[0], "arg": argv[1:], "capture-output": True}
    if input_data:
        args["input-data"] = base64.b64encode(input_data).decode()
    if env:
        args["env"] = env
    return int(command(dom, "guest-exec", args)["pid"])


def exec_status(dom: libvirt.virDomain, pid: int) -> dict[str, Any]:
    """guest-exec-status: {exited, exitcode?, signal?, out-data?, err-data?, out-truncated?, err-truncated?}."""
    return dict(command(dom, "guest-exec-status", {"pid": pid}))


def decode(status: dict[str, Any], key: str) -> bytes:
    data = status.get(key)
    return base64.b64decode(data) if data else b""


def run(dom: libvirt.virDomain, argv: list[str], *, timeout: float = 30,
        input_data: bytes | None = None) -> dict[str, Any] | None:
    """Run ``argv`` and wait up to ``timeout`` s: the final status, or None if it is still running then."""
    pid = exec_start(dom, argv, input_data=input_data)
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        status = exec_status(dom, pid)
        if status.get("exited"):
            status["pid"] = pid
            return status
        if time.monotonic() >= deadline:
            return None
        time.sleep(pause)
        pause = min(pause * 2, 0.5)


def read_file(dom: libvirt.virDomain, path: str, *, timeout: float = 30) -> bytes | None:
    """The contents of ``path`` in the guest (``cat`` through guest-exec), or None when it cannot be read."""
    status = run(dom, ["cat", path], timeout=timeout)
    if status is None or status.get("exitcode") != 0:
        return None
    return decode(status, "out-data")
