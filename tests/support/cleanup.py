"""Remove every libvirt object whose name starts with a test's prefix (and only those)."""

from __future__ import annotations

import contextlib

import libvirt


def _quiet(fn, *args) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        fn(*args)


def sweep(conn: libvirt.virConnect, prefix: str) -> None:
    for dom in conn.listAllDomains():
        if not dom.name().startswith(prefix):
            continue
        if dom.isActive():
            _quiet(dom.destroy)
        if dom.isPersistent():
            flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
            _quiet(dom.undefineFlags, flags)
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
