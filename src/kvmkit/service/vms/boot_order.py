"""A VM's boot order (``kvmkit vm set NAME --boot hd,cdrom``; ``PATCH /api/v1/vms/{name} {"boot": [...]}``).

The order is part of the definition only: libvirt hands it to QEMU when it starts the VM, so a running VM
keeps the order it was started with (a reboot inside the guest included) until it is shut down and started
again. The definition is rewritten through the XML model
(:func:`kvmkit.xml.domain.apply_spec`): only ``<os>`` changes, and an order given there replaces any
per-device ``<boot order='N'/>`` (libvirt refuses both kinds together); every other element stays as it was.
A device kind listed without such a device in the VM (``cdrom`` with no CD-ROM drive, ``network`` with no
NIC) is allowed — the firmware skips it — and named in ``warnings``.
"""

from __future__ import annotations

from typing import Any

import libvirt

from kvmkit.errors import InvalidInput, InvalidState
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain

BOOT_DEVICES = ("hd", "cdrom", "network")
_XML_FLAGS = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE  # keep VNC passwords on redefine


def check_boot(conn: libvirt.virConnect, name: str, boot: list[str], *, live: bool | None = None,
               config: bool | None = None) -> libvirt.virDomain:
    """The VM, once ``boot`` is a valid order for it (InvalidInput / InvalidState naming the fix otherwise).
    ``live`` without ``config`` (a change of the running VM only) is refused: QEMU reads the order at start."""
    if live and config is False:
        raise InvalidInput(f"cannot change the boot order of VM {name} live: it is read when the VM starts",
                           hint="drop --live: the boot order is set in the definition and applies at the next start")
    if not boot:
        raise InvalidInput("the boot order is empty", hint="give at least one of hd, cdrom, network, e.g. --boot hd")
    bad = [b for b in boot if b not in BOOT_DEVICES]
    if bad:
        raise InvalidInput(f"invalid boot device '{bad[0]}': use hd, cdrom or network",
                           hint="e.g. --boot cdrom,hd (first the CD-ROM, then the disk)")
    dups = sorted({b for b in boot if boot.count(b) > 1})
    if dups:
        raise InvalidInput(f"boot device '{dups[0]}' is listed twice", hint="name each device kind once")
    dom = domain(conn, name)
    if not dom.isPersistent():
        raise InvalidState(f"cannot set the boot order of VM {name}: it is transient (not defined)",
                           hint="the boot order lives in the definition; define the VM first")
    return dom


def apply_boot(conn: libvirt.virConnect, dom: libvirt.virDomain, boot: list[str]) -> dict[str, Any]:
    """Rewrite the definition's boot order to ``boot`` (already checked by :func:`check_boot`)."""
    from kvmkit.xml.domain import apply_spec, xml_to_spec
    from kvmkit.xml.util import parse

    name = dom.name()
    with libvirt_errors(f"reading the definition of VM {name}"):
        xml = dom.XMLDesc(_XML_FLAGS)
        running = bool(dom.isActive())
    spec = xml_to_spec(xml)
    old = list(spec.boot)
    if old != boot:
        new_xml = apply_spec(xml, spec.model_copy(update={"boot": list(boot)}))
        with libvirt_errors(f"setting the boot order of VM {name}"):
            conn.defineXMLFlags(new_xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
    root = parse(xml)
    has = {"hd": root.find("devices/disk[@device='disk']") is not None,
           "cdrom": root.find("devices/disk[@device='cdrom']") is not None,
           "network": root.find("devices/interface") is not None}
    warnings = [f"VM {name} has no {'CD-ROM drive' if b == 'cdrom' else 'disk' if b == 'hd' else 'NIC'}: "
                f"the firmware skips '{b}'" for b in boot if not has[b]]
    if root.find("os/kernel") is not None:
        warnings.append(f"VM {name} boots a kernel directly (<kernel>): the boot order is used only without it")
    return {"name": name, "action": "set boot", "boot": list(boot), "old_boot": old, "changed": old != boot,
            "applies": "next start", "running": running, "live": False, "config": True,
            "warnings": warnings}


def set_boot(conn: libvirt.virConnect, name: str, boot: list[str]) -> dict[str, Any]:
    """Set the boot order in VM ``name``'s definition (it applies when the VM next starts)."""
    return apply_boot(conn, check_boot(conn, name, boot), boot)
