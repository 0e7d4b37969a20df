"""Running the libguestfs tools (guestfish, virt-inspector, virt-ls, virt-df) on a VM's disk files.

Why the command-line tools and not the ``guestfs`` Python binding: PyPI has no binding, and Debian's
python3-guestfs is built for the system Python while kvmkit runs in its own venv (it can be loaded there
only by path, tied to the system Python's minor version). The tools are the stable, documented interface;
each runs in a process of its own, so a hung or crashed appliance never takes the API server with it, and
a timeout kills it. Each kvmkit command starts one appliance (a small VM: 20-60 s under TCG).

Every call: no shell; the disks added one by one as ``--format=FMT -a PATH`` with the format libvirt has
for the disk (libguestfs never probes a format); ``LIBGUESTFS_BACKEND=direct`` (libguestfs starts QEMU
itself, not through libvirt); ``LIBGUESTFS_BACKEND_SETTINGS=force_tcg`` when this host's KVM does not run
guests (kvmkit's KVM probe, host/virt_type.py); the appliance's memory from ``$KVMKIT_GUESTFS_MEMSIZE``
(MiB, default 768). Host setup: ``apt-get install libguestfs-tools linux-image-amd64`` (the appliance is
built by supermin from the host's own kernel and packages, cached in /var/tmp/.guestfs-0).
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Any

from kvmkit.errors import HostError, InvalidInput, InvalidState, KvmkitError, NotFound, OperationFailed

TIMEOUT_S = 1800
DEFAULT_MEMSIZE = "768"
PACKAGES = "libguestfs-tools linux-image-amd64"


def env() -> dict[str, str]:
    from kvmkit.host.virt_type import probe_kvm

    out = {**os.environ, "LIBGUESTFS_BACKEND": "direct",
           "LIBGUESTFS_MEMSIZE": os.environ.get("KVMKIT_GUESTFS_MEMSIZE", DEFAULT_MEMSIZE)}
    if not probe_kvm().usable:
        out["LIBGUESTFS_BACKEND_SETTINGS"] = "force_tcg"
    for key in ("LIBGUESTFS_DEBUG", "LIBGUESTFS_TRACE"):
        out.pop(key, None)  # their output would mix with the tools' answers
    return out


def drive_args(disks: list[dict[str, Any]]) -> list[str]:
    """``--format=FMT -a PATH`` for every disk, in the VM's order (the first is the guest's /dev/sda)."""
    args: list[str] = []
    for d in disks:
        if d["format"] not in ("raw", "qcow2"):
            raise InvalidState(f"disk {d['target']} ({d['path']}) is {d['format']}: kvmkit reads raw and qcow2 disks")
        args += [f"--format={d['format']}", "-a", d["path"]]
    return args


def _error(tool: str, stderr: str) -> KvmkitError:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [re.sub(r"^(libguestfs: error: |[\w-]+: error: |[\w-]+: )", "", ln) for ln in lines
              if "error" in ln.lower() or ln.startswith(("guestfish:", "virt-"))]
    text = "; ".join(dict.fromkeys(errors or lines[-3:])) or f"{tool} failed"
    low = text.lower()
    if "no operating system" in low:
        return InvalidState(f"libguestfs found no operating system on the disks: {text}",
                            hint="guest commands need a disk with an installed guest (inspection mounts its file "
                                 "systems); `kvmkit guest df` works on any disk")
    if "no such file or directory" in low:
        return NotFound(f"not in the guest: {text}", hint="check the path with `kvmkit guest ls VM DIR`")
    if "not a directory" in low or "is a directory" in low:
        return InvalidInput(text, hint="check the guest path (a file or a directory?) with `kvmkit guest ls`")
    if "supermin" in low or ("kernel" in low and "find" in low):
        return HostError(f"libguestfs cannot build its appliance: {text}", hint=f"apt-get install {PACKAGES}")
    if "lock" in low and ("write" in low or "shared" in low or "locked" in low):
        return InvalidState(f"a disk is in use by another process: {text}",
                            hint="is the VM running (use --readonly), or another guest command still going?")
    return OperationFailed(f"{tool}: {text}", hint="LIBGUESTFS_DEBUG=1 LIBGUESTFS_TRACE=1 and the same tool by hand "
                                                   "show the appliance's log")


def run(tool: str, args: list[str], *, timeout: float = TIMEOUT_S) -> bytes:
    """Run ``tool args`` (no shell) and return its stdout; a KvmkitError naming the libguestfs error."""
    try:
        res = subprocess.run([tool, *args], capture_output=True, env=env(), timeout=timeout, check=False,
                             stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HostError(f"{tool} is not installed (libguestfs)", hint=f"apt-get install {PACKAGES}") from None
    except subprocess.TimeoutExpired:
        raise OperationFailed(f"{tool} did not finish within {timeout:g} s (its appliance was stopped)",
                              hint="the host may be very busy; try again") from None
    if res.returncode != 0:
        raise _error(tool, res.stderr.decode("utf-8", errors="replace"))
    return res.stdout


def guestfish(disks: list[dict[str, Any]], commands: list[str], *, write: bool = False,
              timeout: float = TIMEOUT_S) -> bytes:
    """``guestfish --ro|--rw DISKS -i CMD ARGS...`` (the guest's file systems mounted by inspection); each
    argument is passed as it is (guestfish reads ``:`` alone as a command separator: never a guest path)."""
    mode = "--rw" if write else "--ro"
    return run("guestfish", [mode, *drive_args(disks), "-i", *commands], timeout=timeout)
