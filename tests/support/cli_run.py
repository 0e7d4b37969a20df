"""Running the real `kvmkit` command from tests, and what a failed create may have left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import libvirt

KVMKIT = str(Path(sys.executable).parent / "kvmkit")


def kvmkit(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``kvmkit ARGS`` against qemu:///system; with ``check`` a non-zero exit fails the test with its output."""
    env = {**os.environ, "KVMKIT_CONNECT": "qemu:///system"}
    res = subprocess.run([KVMKIT, *args], capture_output=True, text=True, env=env, timeout=180)
    if check:
        assert res.returncode == 0, f"kvmkit {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def leftovers(conn: libvirt.virConnect, prefix: str) -> list[str]:
    """Domains and default-pool volumes whose names start with ``prefix``."""
    found = [d.name() for d in conn.listAllDomains() if d.name().startswith(prefix)]
    pool = conn.storagePoolLookupByName("default")
    pool.refresh(0)
    return found + [v.name() for v in pool.listAllVolumes() if v.name().startswith(prefix)]
