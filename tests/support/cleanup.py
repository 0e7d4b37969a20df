"""Remove every libvirt object whose name starts with a test's prefix (and only those), and the serial logs
kvmkit wrote for its VMs."""

from __future__ import annotations

import contextlib
from pathlib import Path

import libvirt

from kvmkit.spec.vm import SERIAL_LOG_DIR


def _quiet(fn, *args) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        fn(*args)


def stop_domains(conn: libvirt.virConnect, prefix: str) -> None:
    """Destroy and undefine the domains named ``prefix``*.

    Call it before deleting any file such a domain may use: libvirt's stop gives the domain's files back
    (restores their owners and counts down its trusted.libvirt.security.* records) in one pass that ends
    at the first file it cannot find, so a disk deleted while its VM runs leaves the records of the
    kernel and initrd behind for good (a stale ref_dac on the shared micro-guest cache)."""
    for dom in conn.listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        if dom.isActive():
            _quiet(dom.destroy)
        if dom.isPersistent():
            flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            _quiet(dom.undefineFlags, flags)


def sweep(conn: libvirt.virConnect, prefix: str) -> None:
    stop_domains(conn, prefix)
    for pool in conn.listAllStoragePools():
        if pool.isActive():
            _quiet(pool.refresh, 0)
            for vol in pool.listAllVolumes() if pool.isActive() else []:
                if vol.name().startswith(prefix):
                    _quiet(vol.delete, 0)
        if pool.name().startswith(prefix):
            if pool.isActive():
                _quiet(pool.destroy)
            _quiet(pool.undefine)
    for net in conn.listAllNetworks():
        if net.name().startswith(prefix):
            if net.isActive():
                _quiet(net.destroy)
            _quiet(net.undefine)
    for path in Path(SERIAL_LOG_DIR).glob(f"{prefix}*"):
        path.unlink(missing_ok=True)
