"""Keep a VM's serial log append-only when kvmkit starts its QEMU.

libvirt truncates a log file that is not marked ``append='on'`` whenever QEMU opens it (see
kvmkit.xml.chardevs). kvmkit defines every VM with ``append='on'``, but a domain written by an older kvmkit
or another tool may lack it: ``vm start`` adds it to the persistent definition, and to the definition kept
in a managed save image (which is what QEMU is started from when one exists), before QEMU opens the log.
Snapshot reverts fix the definition saved in the snapshot (service/copies/snapshots.py); restores and
clones write it into the definition they create.
"""

from __future__ import annotations

import libvirt
from lxml import etree

from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.xml.chardevs import keep_log_history


def keep_history(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[str]:
    """Mark the serial (and other character-device) logs of ``dom`` append-only where they are not; return
    the log files that were changed (empty when the definition already kept history)."""
    changed: set[str] = set()
    if dom.isPersistent():
        root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE).encode())
        files = keep_log_history(root)
        if files:
            with libvirt_errors(f"marking the serial log of VM {dom.name()} append-only"):
                conn.defineXML(etree.tostring(root, encoding="unicode"))
            changed.update(files)
    if dom.hasManagedSaveImage(0):
        with libvirt_errors(f"reading the managed save image of VM {dom.name()}"):
            root = etree.fromstring(dom.managedSaveGetXMLDesc(libvirt.VIR_DOMAIN_SAVE_IMAGE_XML_SECURE).encode())
        files = keep_log_history(root)
        if files:
            with libvirt_errors(f"marking the serial log in the managed save image of VM {dom.name()} append-only"):
                dom.managedSaveDefineXML(etree.tostring(root, encoding="unicode"), 0)
            changed.update(files)
    return sorted(changed)
