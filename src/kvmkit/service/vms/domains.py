"""Finding a VM and naming its state: shared by every VM operation."""

from __future__ import annotations

import libvirt

from kvmkit.errors import NotFound
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.rows import state_name

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "no state",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shut off",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended by the guest (pmsuspended)",
}



def domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    """The domain called ``name`` or NotFound naming it."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(f"VM '{name}' not found on {conn.getURI()}",
                           hint="see `kvmkit vm list --all` for the defined VMs") from err
        with libvirt_errors(f"looking up VM '{name}'"):
            raise


def state_of(dom: libvirt.virDomain) -> str:
    with libvirt_errors(f"reading the state of VM {dom.name()}"):
        code = dom.state()[0]
    return STATE_NAMES.get(code, f"state {code}")


def state_key(dom: libvirt.virDomain) -> str:
    """The state as ``kvmkit vm list`` reports it in JSON (running, paused, shut-off, ...)."""
    with libvirt_errors(f"reading the state of VM {dom.name()}"):
        return state_name(dom.state()[0])
