"""IO schedulers per block device (/sys/block/DEV/queue/scheduler): list, get, set."""

from __future__ import annotations

import re
from typing import Any

from kvmkit.errors import InvalidInput, NotFound
from kvmkit.host import sysfs


def _device(name: str) -> str:
    dev = name.removeprefix("/dev/")
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", dev):
        raise InvalidInput(f"{name!r} is not a block device name", hint="use a name like vda, sda or nvme0n1")
    return dev


def _path(dev: str):
    return sysfs.BLOCK_DIR / dev / "queue" / "scheduler"


def get(name: str) -> dict[str, Any]:
    """``{"device": "vda", "scheduler": "mq-deadline", "available": [...]}``."""
    dev = _device(name)
    if not sysfs.exists(sysfs.BLOCK_DIR / dev):
        known = ", ".join(sysfs.listdir(sysfs.BLOCK_DIR)) or "none"
        raise NotFound(f"block device {dev} not found", hint=f"devices on this host: {known}")
    if not sysfs.exists(_path(dev)):
        return {"device": dev, "scheduler": None, "available": []}
    selected, options = sysfs.read_choice(_path(dev))
    return {"device": dev, "scheduler": selected, "available": options}


def list_all() -> list[dict[str, Any]]:
    return [get(dev) for dev in sysfs.listdir(sysfs.BLOCK_DIR)]


def set_scheduler(name: str, scheduler: str) -> dict[str, Any]:
    """Select ``scheduler`` for a device; InvalidInput naming the available ones when unknown."""
    info = get(name)
    if not info["available"]:
        raise InvalidInput(f"block device {info['device']} has no IO scheduler to choose",
                           hint="partitions and some virtual devices use their parent's queue")
    if scheduler not in info["available"]:
        raise InvalidInput(f"unknown IO scheduler {scheduler!r} for {info['device']}",
                           hint="available: " + ", ".join(info["available"]))
    change = sysfs.write(_path(info["device"]), scheduler)
    result = get(info["device"])
    result["previous"] = change.before
    return result
