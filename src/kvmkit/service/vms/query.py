"""Listing and showing VMs. list_vms makes ONE bulk libvirt call (getAllDomainStats) for every domain."""

from __future__ import annotations

import contextlib
from typing import Any

import libvirt

from kvmkit.errors import KvmkitError
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain
from kvmkit.service.vms.rows import LIST_STATS, STATES, STATS_ACTIVE_ONLY, reason_name, row, state_name

__all__ = ["STATES", "list_vms", "lookup", "show_vm", "state_name"]

lookup = domain

def list_vms(conn: libvirt.virConnect, *, include_inactive: bool = True, ips: bool = False,
             host: str | None = None) -> list[dict[str, Any]]:
    """name, uuid, state, vcpus, max_vcpus, memory_mib, max_memory_mib, host for every domain.

    One libvirt call: virConnectGetAllDomainStats. Name and UUID are read from the returned domain
    objects locally (no extra round trip). With ``ips``, running VMs also get ``ip`` from the DHCP
    leases of all networks (one call per network, plus each running VM's XML for its MACs). ``host`` is
    what the rows' ``host`` says (the host's name in the inventory; default: the connection's URI); the
    VMs of several hosts: kvmkit.service.hosts.listing."""
    flags = 0 if include_inactive else STATS_ACTIVE_ONLY
    with libvirt_errors("listing VMs"):
        records = conn.getAllDomainStats(LIST_STATS, flags)
        host = host or conn.getURI()
    rows = [row(dom.name(), dom.UUIDString(), stats, host) for dom, stats in records]
    if ips:
        _add_ips(conn, records, rows)
    rows.sort(key=lambda r: r["name"])
    return rows


def _add_ips(conn: libvirt.virConnect, records: list[Any], rows: list[dict[str, Any]]) -> None:
    from kvmkit.service.vms.guest_ip import lease_map, macs_of

    running = [(dom, r) for (dom, _stats), r in zip(records, rows, strict=True) if r["state"] == "running"]
    leases = lease_map(conn) if running else {}
    for dom, r in running:
        try:
            r["ip"] = next((leases[m] for m in macs_of(dom) if m in leases), None)
        except libvirt.libvirtError:
            r["ip"] = None


def show_vm(conn: libvirt.virConnect, name: str, *, xml: bool = False) -> dict[str, Any]:
    """Details of one VM: state, resources, disks, NICs (MACs), graphics, virt type and why, metadata."""
    from kvmkit.xml.domain import xml_to_spec
    from kvmkit.xml.util import parse

    dom = lookup(conn, name)
    with libvirt_errors(f"reading VM '{name}'"):
        state, state_reason = dom.state()
        active = bool(dom.isActive())
        persistent = bool(dom.isPersistent())
        autostart = bool(dom.autostart()) if persistent else False
        live = dom.XMLDesc(0)  # graphics ports and the domain type as running
        config = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if persistent else live
    root = parse(live)
    spec = xml_to_spec(config)
    meta = dict(spec.metadata)
    virt_type = root.get("type")
    reason = meta.pop("virt_type_reason", None)
    disks = [{"target": d.target, "device": d.device, "bus": d.bus, "format": d.format,
              "source": d.path or (f"{d.pool}/{d.volume}" if d.volume else None),
              "cache": d.cache, "readonly": d.readonly} for d in spec.disks]
    nics = [{"type": n.type, "source": n.source, "model": n.model, "mac": n.mac} for n in spec.nics]
    graphics = None
    if spec.graphics is not None:
        gel = next((g for g in root.iterfind("devices/graphics") if g.get("type") == spec.graphics.type), None)
        port = gel.get("port") if gel is not None else None
        graphics = {"type": spec.graphics.type, "listen": spec.graphics.listen,
                    "port": int(port) if port and port != "-1" else None,
                    "autoport": spec.graphics.port is None,
                    "password_set": _graphics_password_set(dom, spec.graphics.type, persistent)}
    out: dict[str, Any] = {
        "name": spec.name, "uuid": spec.uuid, "title": spec.title, "description": spec.description,
        "state": state_name(state), "state_reason": reason_name(state, state_reason), "active": active,
        "persistent": persistent, "autostart": autostart,
        "virt_type": virt_type, "virt_type_reason": reason or _reason_guess(virt_type),
        "vcpus": spec.vcpus, "max_vcpus": spec.max_vcpus, "memory_mib": spec.memory_mib,
        "max_memory_mib": spec.max_memory_mib,
        "topology": _topology(parse(config)),
        "cpu_mode": spec.cpu_mode, "cpu_model": spec.cpu_model, "machine": spec.machine,
        "firmware": spec.firmware, "boot": spec.boot, "kernel": spec.kernel, "initrd": spec.initrd,
        "cmdline": spec.cmdline, "disks": disks, "nics": nics, "macs": [n["mac"] for n in nics if n["mac"]],
        "graphics": graphics, "serial_log": spec.serial_log, "hugepages": spec.hugepages,
        "nosharepages": spec.nosharepages, "balloon": spec.balloon, "rng": spec.rng,
        "guest_agent": spec.guest_agent, "usb": spec.usb, "profile": spec.profile, "metadata": meta,
        "host": conn.getURI(),
    }
    from kvmkit.service.osinfo.presets import describe_vm

    out.update(describe_vm(spec.os, parse(config)))  # os (libosinfo metadata), tpm, secure_boot
    out["addresses"] = _addresses(conn, dom) if active else []
    from kvmkit.service.vms.agent import summary

    out["agent"] = summary(dom, live)  # channel state; OS, hostname, file systems ... when it answers
    out["ip"] = next((a["addr"] for a in out["addresses"] if a["type"] == "ipv4"), None)
    if xml:
        with libvirt_errors(f"reading VM '{name}'"):
            out["xml"] = dom.XMLDesc(0)  # without VIR_DOMAIN_XML_SECURE: no display password in it
    return out


def _graphics_password_set(dom: libvirt.virDomain, kind: str, persistent: bool) -> bool:
    """Whether the display has a password. libvirt leaves ``passwd`` out of the XML unless asked with
    VIR_DOMAIN_XML_SECURE; only its presence is read here, the password itself is never returned."""
    flags = libvirt.VIR_DOMAIN_XML_SECURE | (libvirt.VIR_DOMAIN_XML_INACTIVE if persistent else 0)
    try:
        with libvirt_errors("reading the VM's display settings"):
            from kvmkit.xml.util import parse

            secure = parse(dom.XMLDesc(flags))
    except KvmkitError:
        return False
    return any(g.get("passwd") for g in secure.iterfind("devices/graphics") if g.get("type") == kind)


def _topology(root: Any) -> dict[str, int] | None:
    """The CPU topology as the XML has it (also what a spec cannot hold, e.g. dies > 1)."""
    topo = root.find("cpu/topology")
    if topo is None:
        return None
    out = {}
    for key in ("sockets", "dies", "clusters", "cores", "threads"):
        with contextlib.suppress(TypeError, ValueError):
            out[key] = int(topo.get(key))
    if out.get("dies") == 1:
        del out["dies"]
    return out or None


def _addresses(conn: libvirt.virConnect, dom: libvirt.virDomain) -> list[dict[str, Any]]:
    """Guest addresses (DHCP lease, neighbour table, guest agent); a source that fails adds nothing."""
    from kvmkit.errors import KvmkitError
    from kvmkit.service.vms.guest_ip import guest_addresses

    try:
        return guest_addresses(conn, dom)
    except (KvmkitError, libvirt.libvirtError):
        return []


def _reason_guess(virt_type: str | None) -> str:
    if virt_type == "kvm":
        return "defined as kvm (hardware virtualization)"
    if virt_type == "qemu":
        return "defined as qemu (TCG software emulation)"
    return f"defined with domain type {virt_type}"
