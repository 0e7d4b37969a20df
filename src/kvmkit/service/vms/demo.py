"""The demo VM: the micro-guest on the default network, booted and waited for (README's main job)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from kvmkit.errors import OperationFailed

DEMO_NAME = "kvmkit-demo"


def _serial_log(dom: libvirt.virDomain) -> str | None:
    from lxml import etree

    tree = etree.fromstring(dom.XMLDesc(0))
    log = tree.find("./devices/serial/log")
    return log.get("file") if log is not None else None


def ensure_demo(conn: libvirt.virConnect, name: str = DEMO_NAME, *, wait: float = 60.0,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Create (once) and start the demo micro-guest; wait for its ready marker and its DHCP address."""
    from kvmkit.service.vms import lifecycle as vm_lifecycle
    from kvmkit.service.vms.create import create_vm

    say = progress or (lambda _m: None)
    try:
        dom = conn.lookupByName(name)
        created = False
    except libvirt.libvirtError:
        create_vm(conn, {"name": name, "micro": True, "memory_mib": 256, "vcpus": 1,
                         "nics": [{"type": "network", "source": "default"}],
                         "title": "kvmkit demo micro-guest"}, progress=say)
        dom = conn.lookupByName(name)
        created = True
    log = _serial_log(dom)
    offset = Path(log).stat().st_size if log and Path(log).exists() and dom.isActive() else 0
    if not dom.isActive():
        say(f"starting {name}")
        vm_lifecycle.start(conn, name)
        offset = 0
    ready = ip = None
    deadline = time.monotonic() + wait
    while log and time.monotonic() < deadline:
        text = Path(log).read_bytes().decode(errors="replace") if Path(log).exists() else ""
        if offset and "KVMKIT-GUEST-READY" in text[:offset]:
            ready = True  # it was already running and ready
        if "KVMKIT-GUEST-READY" in text[offset:] or ready:
            ready = True
            match = re.findall(r"KVMKIT-IP (\S+)", text)
            if match:
                ip = match[-1]
                break
        time.sleep(0.25)
    if not ready:
        raise OperationFailed(f"demo VM {name} did not print its ready marker within {wait:.0f} s",
                              hint=f"look at its serial log: kvmkit vm console {name} --log")
    return {"name": name, "created": created, "state": "running", "ready": True, "ip": ip, "serial_log": log,
            "console": f"kvmkit vm console {name}", "console_log": f"kvmkit vm console {name} --log"}
