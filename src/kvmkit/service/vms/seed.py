"""The cloud-init seed disk after first boot: eject it (detach and delete) once cloud-init has run.

``vm create --cloud-init ...,eject=yes`` marks the VM (``<kvmkit:cidata_eject>pending``). kvmkit ejects the
seed only when the guest itself says cloud-init is done with it: the guest agent reads
``/run/cloud-init/result.json`` (written by cloud-init at the end of its last stage, on every boot) and its
``datasource`` must name NoCloud, i.e. the seed was found and used. Then the disk is detached (live and from
the definition), its volume deleted and the mark set to ``done``.

When that check runs: ``kvmkit vm eject-seed NAME [--wait S]`` (API: POST /api/v1/vms/{name}/seed/eject),
and before kvmkit's own shutdown and reboot of the VM (without waiting; skipped when the agent does not
answer or cloud-init has not finished). ``--force`` ejects without asking the guest (e.g. a shut-off VM
whose first boot you watched).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import InvalidState, KvmkitError, NotFound
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms import agent
from kvmkit.service.vms.domains import domain
from kvmkit.xml.metadata import NS, PREFIX

EJECT_KEY = "cidata_eject"
SEED_KEY = "cidata"
RESULT = "/run/cloud-init/result.json"


def _kvmkit_meta(dom: libvirt.virDomain, flags: int) -> etree._Element | None:
    """kvmkit's metadata element as libvirt hands it out: ``<vm>`` with its children, without the namespace."""
    try:
        return etree.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NS, flags).encode())
    except libvirt.libvirtError:
        return None


def _meta_value(dom: libvirt.virDomain, key: str) -> str | None:
    root = _kvmkit_meta(dom, libvirt.VIR_DOMAIN_AFFECT_CONFIG if dom.isPersistent() else 0)
    return None if root is None else root.findtext(key)


def set_meta(dom: libvirt.virDomain, changes: dict[str, str | None]) -> None:
    """Set (or with None remove) keys of kvmkit's domain metadata, live and in the definition."""
    targets = [libvirt.VIR_DOMAIN_AFFECT_CONFIG] if dom.isPersistent() else []
    if dom.isActive():
        targets.append(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    for flag in targets:
        root = _kvmkit_meta(dom, flag)
        if root is None:
            root = etree.Element("vm")
        for key, value in changes.items():
            for old in root.findall(key):
                root.remove(old)
            if value is not None:
                etree.SubElement(root, key).text = value  # libvirt puts it in kvmkit's namespace
        with libvirt_errors(f"updating the metadata of VM {dom.name()}"):
            dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, etree.tostring(root, encoding="unicode"), PREFIX,
                            NS, flag)


def seed_disk(conn: libvirt.virConnect, dom: libvirt.virDomain) -> dict[str, Any] | None:
    """The VM's kvmkit seed disk: {volume, path, target, eject} (None when it has none attached)."""
    volume = _meta_value(dom, SEED_KEY)
    if not volume:
        return None
    path = None
    with contextlib.suppress(libvirt.libvirtError):
        path = conn.storagePoolLookupByName("default").storageVolLookupByName(volume).path()
    root = etree.fromstring(dom.XMLDesc(0).encode())
    for disk in root.iterfind("devices/disk"):
        src, tgt = disk.find("source"), disk.find("target")
        file = src.get("file") if src is not None else None
        if file and tgt is not None and (file == path or os.path.basename(file) == volume):
            return {"volume": volume, "path": file, "target": tgt.get("dev"), "eject": _meta_value(dom, EJECT_KEY)}
    return None


def cloud_init_result(dom: libvirt.virDomain) -> dict[str, Any] | None:
    """cloud-init's result of this boot read through the agent ({datasource, errors}), None before it is done."""
    data = agent.read_file(dom, RESULT)
    if data is None:
        return None
    try:
        v1 = json.loads(data)["v1"]
        return {"datasource": str(v1.get("datasource") or ""), "errors": list(v1.get("errors") or [])}
    except (ValueError, KeyError, TypeError):
        return None


def eject(conn: libvirt.virConnect, name: str, *, wait: float = 0, force: bool = False) -> dict[str, Any]:
    """Detach and delete the VM's seed once cloud-init has used it (waiting up to ``wait`` s for it to finish);
    ``force``: without asking the guest."""
    dom = domain(conn, name)
    seed = seed_disk(conn, dom)
    if seed is None:
        raise NotFound(f"VM {name} has no cloud-init seed disk attached",
                       hint="it was ejected already, or the VM was made without --cloud-init")
    result = None
    if not force:
        agent.require_agent(dom, "ask the guest whether cloud-init has finished")
        deadline = time.monotonic() + wait
        while (result := cloud_init_result(dom)) is None and time.monotonic() < deadline:
            time.sleep(2)
        if result is None:
            raise InvalidState(f"cloud-init has not finished in VM {name} yet ({RESULT} is not there)",
                               hint=f"wait: kvmkit vm eject-seed {name} --wait 600")
        if "NoCloud" not in result["datasource"]:
            raise InvalidState(f"cloud-init in VM {name} ran from '{result['datasource']}', not from kvmkit's seed; "
                               "the seed is kept", hint="check the guest's cloud-init log (/var/log/cloud-init.log)")
    _detach_and_delete(conn, dom, seed)
    return {"name": name, "action": "eject-seed", "volume": seed["volume"], "target": seed["target"],
            "forced": force, "cloud_init": result}


def _detach_and_delete(conn: libvirt.virConnect, dom: libvirt.virDomain, seed: dict[str, Any]) -> None:
    from kvmkit.service.vms.devices import detach_disk

    detach_disk(conn, dom.name(), seed["target"])  # live when running (waits for the guest), and the definition
    try:
        vol = conn.storageVolLookupByPath(seed["path"])
    except libvirt.libvirtError:
        vol = None
    with libvirt_errors(f"deleting the seed volume {seed['volume']}"):
        if vol is not None:
            vol.delete(0)
        elif os.path.exists(seed["path"]):
            os.unlink(seed["path"])
    set_meta(dom, {SEED_KEY: None, EJECT_KEY: "done"})


def eject_if_done(conn: libvirt.virConnect, dom: libvirt.virDomain) -> dict[str, Any] | None:
    """Eject a seed marked for eject when the agent says cloud-init is done; never waits or raises."""
    try:
        if _meta_value(dom, EJECT_KEY) != "pending" or not agent.connected(dom):
            return None
        return eject(conn, dom.name())
    except (KvmkitError, libvirt.libvirtError):
        return None
