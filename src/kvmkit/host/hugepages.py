"""Huge pages: counts per size, run-time allocation of 2 MiB pages, 1 GiB boot parameters, and the start check
for VMs backed by huge pages.

2 MiB pages can be allocated at run time (``nr_hugepages``); the kernel gives what it can find contiguous,
so :func:`allocate` reads the count back and reports it. 1 GiB pages are reliably reserved only at boot:
:func:`allocate` returns the kernel command line to add instead.
"""

from __future__ import annotations

import math
import re
from typing import Any

from kvmkit.errors import HostError, InvalidInput, InvalidState
from kvmkit.host import sysfs

SIZES_KIB = {"2M": 2048, "1G": 1048576}


def size_kib(size: str) -> int:
    key = size.strip().upper().removesuffix("IB").removesuffix("B")
    if key in ("2048K",):
        key = "2M"
    if key not in SIZES_KIB:
        raise InvalidInput(f"unknown huge page size {size!r}", hint="use --size 2M or --size 1G")
    return SIZES_KIB[key]


def _dir(kib: int):
    return sysfs.HUGEPAGES_DIR / f"hugepages-{kib}kB"


def default_size_kib() -> int:
    return sysfs.meminfo().get("Hugepagesize", 2048)


def pools() -> list[dict[str, Any]]:
    """Per page size: total, free, reserved, surplus and the really available count (free - reserved)."""
    out = []
    for name in sysfs.listdir(sysfs.HUGEPAGES_DIR):
        match = re.fullmatch(r"hugepages-(\d+)kB", name)
        if not match:
            continue
        kib = int(match.group(1))
        d = sysfs.HUGEPAGES_DIR / name
        total, free = sysfs.read_int(d / "nr_hugepages"), sysfs.read_int(d / "free_hugepages")
        resv, surplus = sysfs.read_int(d / "resv_hugepages"), sysfs.read_int(d / "surplus_hugepages")
        out.append({"size_kib": kib, "size": _label(kib), "total": total, "free": free, "reserved": resv,
                    "surplus": surplus, "available": max(free - resv, 0),
                    "total_bytes": total * kib * 1024})
    return sorted(out, key=lambda p: p["size_kib"])


def _label(kib: int) -> str:
    return f"{kib // 1048576}G" if kib % 1048576 == 0 else f"{kib // 1024}M"


def pool(kib: int) -> dict[str, Any]:
    for p in pools():
        if p["size_kib"] == kib:
            return p
    raise HostError(f"this kernel has no {_label(kib)} huge pages ({_dir(kib)} is missing)",
                    hint="the CPU or kernel does not support this page size")


def boot_cmdline(count: int, kib: int = 1048576) -> str:
    label = _label(kib)
    return f"default_hugepagesz={label} hugepagesz={label} hugepages={count}"


def allocate(count: int, size: str = "2M") -> dict[str, Any]:
    """Set the number of persistent huge pages of ``size``; report requested vs. what the kernel gave."""
    if count < 0:
        raise InvalidInput(f"--count {count} is negative", hint="give the number of huge pages, e.g. --count 512")
    kib = size_kib(size)
    if kib == SIZES_KIB["1G"]:
        line = boot_cmdline(count, kib)
        return {"size": "1G", "requested": count, "allocated": None, "runtime": False, "kernel_cmdline": line,
                "instructions": f'add "{line}" to GRUB_CMDLINE_LINUX in /etc/default/grub, run update-grub '
                                "(or grub2-mkconfig) and reboot; 1 GiB pages cannot be reserved reliably at run time"}
    before = pool(kib)
    change = sysfs.write(_dir(kib) / "nr_hugepages", count)
    after = pool(kib)
    result = {"size": _label(kib), "requested": count, "allocated": after["total"], "before": before["total"],
              "free": after["free"], "runtime": True, "complete": after["total"] >= count,
              "change": change.to_dict()}
    if after["total"] < count:
        result["warning"] = (f"the kernel gave {after['total']} of {count} {_label(kib)} pages "
                             "(not enough contiguous free memory); free memory or drop caches and retry, "
                             "or reserve them at boot with hugepages=N")
    return result


def _domain_needs(xml: str) -> tuple[bool, int, int, str | None]:
    """(uses huge pages, page size KiB, memory KiB, memory source type) from domain XML."""
    from lxml import etree

    root = etree.fromstring(xml.encode())
    hp = root.find("memoryBacking/hugepages")
    if hp is None:
        return False, 0, 0, None
    mem = root.find("memory")
    mem_kib = _to_kib(int(mem.text), mem.get("unit", "KiB")) if mem is not None and mem.text else 0
    page = hp.find("page")
    kib = _to_kib(int(page.get("size")), page.get("unit", "KiB")) if page is not None else default_size_kib()
    src = root.find("memoryBacking/source")
    return True, kib, mem_kib, (src.get("type") if src is not None else None)


_UNITS = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024,
          "mb": 1000**2 / 1024, "g": 1024**2, "gib": 1024**2, "gb": 1000**3 / 1024, "t": 1024**3, "tib": 1024**3}


def _to_kib(value: int, unit: str) -> int:
    return int(value * _UNITS.get(unit.lower(), 1))


def domain_requirement(xml: str) -> dict[str, Any] | None:
    """How many huge pages of which size a domain needs to start, or None when it does not use them."""
    uses, kib, mem_kib, source = _domain_needs(xml)
    if not uses:
        return None
    return {"size_kib": kib, "size": _label(kib), "pages": math.ceil(mem_kib / kib), "memory_kib": mem_kib,
            "source": source or "file"}


def check_domain_can_start(conn, dom) -> dict[str, Any] | None:
    """Raise InvalidState when a VM backed by huge pages cannot start because too few are free.

    Says how many pages it needs and how many are free, and how to allocate more. Returns the requirement
    (None for VMs without huge pages). ``conn`` is accepted for the shared interface (local host only).
    """
    from kvmkit.hypervisor.errors import libvirt_errors

    with libvirt_errors("reading the VM's definition"):
        name = dom.name()
        xml = dom.XMLDesc(0)
    need = domain_requirement(xml)
    if need is None:
        return None
    have = pool(need["size_kib"])
    if have["available"] < need["pages"]:
        missing = need["pages"] - have["available"]
        hint = (f"kvmkit host hugepages --count {have['total'] + missing} --size {need['size']}"
                if need["size"] == "2M" else f"boot with {boot_cmdline(have['total'] + missing)}")
        raise InvalidState(
            f"VM {name} needs {need['pages']} huge pages of {need['size']} ({need['memory_kib'] // 1024} MiB) "
            f"but only {have['available']} are free ({have['total']} total)",
            hint=f"allocate more: {hint}, or remove <hugepages/> from the VM")
    if need["source"] != "memfd" and not sysfs.mounts_of_type("hugetlbfs"):
        raise InvalidState(
            f"VM {name} uses huge pages but no hugetlbfs is mounted",
            hint="mount -t hugetlbfs hugetlbfs /dev/hugepages and restart libvirtd, "
                 "or back the VM with <memoryBacking><source type='memfd'/></memoryBacking>")
    return {**need, "available": have["available"]}
