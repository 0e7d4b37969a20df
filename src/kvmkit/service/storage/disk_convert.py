"""Convert a shut-off VM's disk file to another format and switch the VM's definition to the new file.

What the seeds do by hand (qemu-img convert + virsh edit), done safely: the VM must be shut off, the
source must be one of its disks, the domain XML is edited with lxml (source file and driver type only)
and redefined; if redefining fails the new file is removed. The old file is kept (delete it yourself).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import InvalidInput, InvalidState, NotFound
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.images import qemu_img


def _domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as err:
        raise NotFound(f"VM '{name}' not found", hint="list VMs with `kvmkit vm list --all`") from err


def convert_vm_disk(conn: libvirt.virConnect, vm: str, src: str | Path, dst: str | Path, dst_fmt: str,
                    progress: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Convert disk ``src`` of shut-off VM ``vm`` to ``dst`` in ``dst_fmt`` and point the VM at ``dst``."""
    qemu_img.check_format(dst_fmt)
    dom = _domain(conn, vm)
    if dom.isActive():
        raise InvalidState(f"VM '{vm}' is running", hint=f"shut it down first: kvmkit vm shutdown {vm}")
    src_p, dst_p = Path(src).resolve(), Path(dst).resolve()
    with libvirt_errors(f"VM {vm}"):
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
    disk = None
    for candidate in root.iterfind("devices/disk"):
        source = candidate.find("source")
        if source is not None and source.get("file") and Path(source.get("file") or "").resolve() == src_p:
            disk = candidate
            break
    if disk is None:
        raise InvalidInput(f"VM '{vm}' has no disk {src_p}", hint=f"see its disks with `kvmkit vm show {vm}`")
    driver = disk.find("driver")
    src_fmt = driver.get("type") if driver is not None and driver.get("type") else qemu_img.probe_format(src_p)
    qemu_img.convert(src_p, dst_p, src_fmt, dst_fmt, progress=progress)
    try:
        if driver is None:
            driver = etree.SubElement(disk, "driver", name="qemu")
            disk.insert(0, driver)
        driver.set("type", dst_fmt)
        source_el = disk.find("source")
        assert source_el is not None
        source_el.set("file", str(dst_p))
        backing = disk.find("backingStore")
        if backing is not None:  # the converted file is self-contained
            disk.remove(backing)
        with libvirt_errors(f"redefine VM {vm}"):
            conn.defineXML(etree.tostring(root, encoding="unicode"))
    except BaseException:
        dst_p.unlink(missing_ok=True)
        raise
    _refresh_pools_holding(conn, dst_p)
    return {"vm": vm, "old": str(src_p), "new": str(dst_p), "old_format": src_fmt, "format": dst_fmt}


def _refresh_pools_holding(conn: libvirt.virConnect, path: Path) -> None:
    for pool in conn.listAllStoragePools(libvirt.VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE):
        target = etree.fromstring(pool.XMLDesc(0)).findtext("target/path")
        if target and Path(target).resolve() == path.parent:
            try:
                pool.refresh(0)
            except libvirt.libvirtError:
                pass
