"""The serial console: its log file, and an interactive session over libvirt's stream API."""

from __future__ import annotations

import os
import select
import threading
import time

import pytest

from kvmkit.errors import InvalidState, NotFound
from kvmkit.hypervisor.connection import connect
from kvmkit.service.vms import console as vm_console


@pytest.mark.guest
def test_serial_log_path_and_tail(conn, micro_guest):
    guest = micro_guest("log")
    guest.log.wait_status()
    assert vm_console.serial_log_path(conn, guest.name) == str(guest.log.path)
    full = vm_console.read_log(conn, guest.name)
    assert "KVMKIT-GUEST-READY" in full["text"] and full["path"] == str(guest.log.path)
    tail = vm_console.read_log(conn, guest.name, tail=1)["text"]
    assert tail.count("\n") <= 1 and full["text"].endswith(tail)
    with pytest.raises(NotFound):
        vm_console.read_log(conn, guest.name + "-missing")


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while needle not in got:
        left = deadline - time.monotonic()
        assert left > 0, f"{needle!r} never came through the console; got {got[-400:]!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            got += os.read(fd, 4096)
    return got


@pytest.mark.guest
def test_interactive_console_runs_a_command_and_leaves_on_ctrl_bracket(micro_guest):
    vm_console.ensure_event_loop()  # before the connection is opened
    conn = connect("qemu:///system")
    try:
        guest = micro_guest("tty")
        guest.log.wait_status()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(vm_console.attach(conn, guest.name, in_r, out_w)),
                                  daemon=True)
        worker.start()  # input written before the console is open waits in the pipe
        os.write(in_w, b"\necho KT-CON-$((40+2))\n")
        _read_until(out_r, b"KT-CON-42", timeout=120)  # the shell's answer, not the echoed input
        os.write(in_w, b"\x1d")
        worker.join(120)  # a guard: the session ends within 0.2 s
        assert not worker.is_alive(), "Ctrl-] did not end the console session"
        assert result["ended"] == "escape"
        # the console is free again: a second session works
        worker = threading.Thread(target=lambda: result.update(vm_console.attach(conn, guest.name, in_r, out_w)),
                                  daemon=True)
        worker.start()
        os.write(in_w, b"echo KT-AGAIN-$((1+1))\n")
        _read_until(out_r, b"KT-AGAIN-2", timeout=120)
        os.close(in_w)  # end of input also ends the session
        worker.join(120)
        assert result["ended"] == "input closed"
        # the VM stopping ends the session too
        in_r2, in_w2 = os.pipe()
        worker = threading.Thread(target=lambda: result.update(vm_console.attach(conn, guest.name, in_r2, out_w)),
                                  daemon=True)
        worker.start()
        os.write(in_w2, b"echo KT-THIRD-$((1+2))\n")
        _read_until(out_r, b"KT-THIRD-3", timeout=120)  # the session is open: now the VM stops under it
        guest.dom.destroy()
        worker.join(120)
        assert not worker.is_alive(), "the session outlived the VM"
        assert result["ended"] == "VM stopped", result
        os.close(in_w2)
        os.close(in_r2)
        with pytest.raises(InvalidState, match=r"cannot open the console of VM .*: it is shut off"):
            vm_console.attach(conn, guest.name, in_r, out_w)
        for fd in (in_r, out_r, out_w):
            os.close(fd)
    finally:
        conn.close()
