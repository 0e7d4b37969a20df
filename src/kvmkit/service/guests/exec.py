"""Run a command in a running guest, and set a guest user's password, through the QEMU guest agent.

``exec_command`` starts the command with ``guest-exec`` (output captured) and polls ``guest-exec-status``
until it exits or the timeout passes. It returns the exit code (or the signal that ended it), stdout and
stderr (base64-decoded from the agent; as text, with ``*_b64`` added when they are not UTF-8) and whether
the agent cut them (it keeps at most 16 MiB of each). The agent cannot stop a command: after the timeout
the result says it is still running and names its pid in the guest (``kill PID`` through exec ends it).

``set_password`` is libvirt's ``virDomainSetUserPassword`` (agent ``guest-set-user-password``).
"""

from __future__ import annotations

import base64
import time
from typing import Any

import libvirt

from kvmkit.errors import InvalidInput, OperationFailed
from kvmkit.service.vms import agent
from kvmkit.service.vms.domains import domain

MAX_TIMEOUT_S = 3600
MAX_INPUT = 1024 * 1024  # stdin for the command: the agent takes it in one message


def _text(data: bytes, key: str) -> dict[str, Any]:
    try:
        return {key: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {key: data.decode("utf-8", errors="replace"), f"{key}_b64": base64.b64encode(data).decode()}


def check_command(command: list[str], timeout: float) -> None:
    if not command or not command[0]:
        raise InvalidInput("no command given", hint="e.g. kvmkit vm exec VM -- uname -a")
    if any("\0" in part for part in command):
        raise InvalidInput("the command contains a NUL character", hint="pass each argument as plain text")
    if not 0 < timeout <= MAX_TIMEOUT_S:
        raise InvalidInput(f"invalid timeout {timeout:g}: give 1 to {MAX_TIMEOUT_S} seconds")


def exec_command(conn: libvirt.virConnect, name: str, command: list[str], *, timeout: float = 60,
                 input_data: bytes | None = None) -> dict[str, Any]:
    """Run ``command`` (argv, no shell) in VM ``name``'s guest; wait up to ``timeout`` s for it to exit."""
    check_command(command, timeout)
    if input_data is not None and len(input_data) > MAX_INPUT:
        raise InvalidInput(f"the input is {len(input_data)} bytes; at most {MAX_INPUT} go through the agent",
                           hint="copy large files in with `kvmkit guest copy-in` (shut-off VM) or scp")
    dom = domain(conn, name)
    agent.require_agent(dom, "run a command in the guest")
    began = time.monotonic()
    try:
        pid = agent.exec_start(dom, command, input_data=input_data)
    except OperationFailed as err:
        raise InvalidInput(f"the guest of VM {name} could not start {command[0]!r}: {err.message}",
                           hint="give a program on the guest's PATH or its full path; a shell line needs "
                                "`sh -c '...'`") from err
    deadline = began + timeout
    pause = 0.05
    while True:
        status = agent.exec_status(dom, pid)
        if status.get("exited"):
            break
        if time.monotonic() >= deadline:
            return {"name": name, "command": command, "pid": pid, "exited": False, "timed_out": True,
                    "exit_code": None, "signal": None, "stdout": "", "stderr": "",
                    "seconds": round(time.monotonic() - began, 1),
                    "message": f"still running in the guest as pid {pid} after {timeout:g} s (the agent cannot "
                               f"stop it; `kvmkit vm exec {name} -- kill {pid}` does)"}
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
    out: dict[str, Any] = {"name": name, "command": command, "pid": pid, "exited": True, "timed_out": False,
                           "exit_code": status.get("exitcode"), "signal": status.get("signal"),
                           "seconds": round(time.monotonic() - began, 1),
                           "stdout_truncated": bool(status.get("out-truncated")),
                           "stderr_truncated": bool(status.get("err-truncated"))}
    out.update(_text(agent.decode(status, "out-data"), "stdout"))
    out.update(_text(agent.decode(status, "err-data"), "stderr"))
    return out


def exit_status(result: dict[str, Any]) -> int:
    """The exit code a shell would report: the command's, 128+signal, or 124 for a timeout."""
    if result.get("timed_out"):
        return 124
    if result.get("signal") is not None:
        return 128 + int(result["signal"])
    return int(result.get("exit_code") or 0)


def set_password(conn: libvirt.virConnect, name: str, user: str, password: str) -> dict[str, Any]:
    """Set ``user``'s password in the guest (the clear text goes to the agent only, never into a result)."""
    if not user or any(c in user for c in ":\n\r\0") or len(user) > 64:
        raise InvalidInput(f"invalid user name {user!r}", hint="give the guest user's login name, e.g. root")
    if not password or any(c in password for c in "\n\r\0"):
        raise InvalidInput("the password is empty or has a line break", hint="give a one-line password")
    dom = domain(conn, name)
    agent.require_agent(dom, "set a password in the guest")
    try:
        dom.setUserPassword(user, password, 0)
    except libvirt.libvirtError as err:
        raise OperationFailed(f"the guest agent of VM {name} could not set the password of {user}: "
                              f"{err.get_error_message()}", hint="check that the user exists in the guest") from err
    return {"name": name, "user": user, "action": "set-password", "changed": True}
