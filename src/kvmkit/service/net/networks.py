"""Virtual networks: create (nat, isolated, route, bridge), list, show, start, stop, autostart, delete,
DHCP reservations and leases. A new subnet must not overlap a host address, host route or another libvirt
network; bridge-mode networks can create their host bridge (``host.bridges``) and delete it again.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.spec.network import DhcpHost, NetworkSpec
from kvmkit.xml.network import describe_xml, host_xml, network_subnets, spec_to_xml

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network


def is_local(conn: libvirt.virConnect) -> bool:
    """True when libvirt runs on this machine (host interfaces and routes can be read and changed here)."""
    from urllib.parse import urlparse

    uri = urlparse(conn.getURI())
    return not uri.scheme.startswith("test") and uri.hostname in (None, "", "localhost", "127.0.0.1")


def _network_xmls(conn: libvirt.virConnect) -> list[tuple[libvirt.virNetwork, str]]:
    """Every network with its XML, skipping ones that vanish while we look (other clients work too)."""
    with libvirt_errors("listing networks"):
        nets = conn.listAllNetworks()
    out = []
    for net in nets:
        try:
            out.append((net, net.XMLDesc(0)))
        except libvirt.libvirtError:
            continue
    return out


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            raise NotFound(f"network '{name}' does not exist", hint="see `kvmkit net list`") from err
        raise


# ---------------------------------------------------------------- subnet overlap


def find_overlap(conn: libvirt.virConnect, subnet: str | Subnet, *, ignore_network: str | None = None) -> str | None:
    """Name what ``subnet`` overlaps (a libvirt network, a host address or a host route), or None."""
    net = ipaddress.ip_network(subnet) if isinstance(subnet, str) else subnet
    bridges: dict[str, str] = {}
    for other, xml in _network_xmls(conn):
        info = describe_xml(xml)
        if info["bridge"]:
            bridges[info["bridge"]] = other.name()
        if other.name() == ignore_network:
            continue
        for s in network_subnets(xml):
            if s.version == net.version and s.overlaps(net):
                return f"libvirt network '{other.name()}' ({s})"
    if not is_local(conn):
        return None  # host interfaces of the test driver or a remote host are not visible from here
    from kvmkit.host import bridges as host

    for a in host.addresses():
        if a["family"] not in ("inet", "inet6") or a["scope"] == "host":
            continue
        iface = ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}")
        own = ignore_network is not None and bridges.get(a["ifname"]) == ignore_network
        if iface.version == net.version and iface.network.overlaps(net) and not own:
            return f"address {iface} on host interface {a['ifname']}"
    for r in host.routes():
        if r["dst"] == "default" or r.get("type") in ("multicast", "unreachable", "blackhole"):
            continue
        try:
            dst = ipaddress.ip_network(r["dst"], strict=False)
        except ValueError:
            continue
        if dst.version == net.version and dst.overlaps(net) and not dst.is_link_local:
            via = f" via {r['gateway']}" if r.get("gateway") else ""
            return f"host route {dst}{via} dev {r.get('dev', '?')}"
    return None


def ensure_no_overlap(conn: libvirt.virConnect, subnet: str, *, ignore_network: str | None = None) -> None:
    clash = find_overlap(conn, subnet, ignore_network=ignore_network)
    if clash:
        raise Conflict(f"subnet {subnet} overlaps {clash}", hint="choose another --subnet (see `ip route`)")


def free_subnet(conn: libvirt.virConnect, candidates: list[str] | None = None) -> str:
    """The first /24 of 192.168.100-254.0 (or ``candidates``) that overlaps nothing."""
    for cand in candidates or [f"192.168.{i}.0/24" for i in range(100, 255)]:
        if find_overlap(conn, cand) is None:
            return cand
    raise Conflict("no free /24 subnet among the candidates", hint="give --subnet explicitly")


def random_free_subnet(conn: libvirt.virConnect, base: str = "10.213.0.0/16") -> str:
    """A random free /24 inside ``base`` (tests use this to stay clear of each other)."""
    subs = list(ipaddress.IPv4Network(base).subnets(new_prefix=24))
    random.shuffle(subs)
    return free_subnet(conn, [str(s) for s in subs[:64]])


# ---------------------------------------------------------------- which VMs use a network


def _interfaces(dom: libvirt.virDomain) -> list[etree._Element]:
    root = etree.fromstring(dom.XMLDesc(0).encode())
    return root.findall("devices/interface")


def users(conn: libvirt.virConnect, name: str, *, running_only: bool = True) -> list[str]:
    """Names of the VMs (running ones by default) with a NIC on network ``name`` or on its bridge."""
    info = describe_xml(lookup(conn, name).XMLDesc(0))
    bridge = info["bridge"]
    flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if running_only else 0
    found = []
    with libvirt_errors("listing VMs"):
        doms = conn.listAllDomains(flags)
    for dom in doms:
        try:
            nics = _interfaces(dom)
            dom_name = dom.name()
        except libvirt.libvirtError:
            continue  # the VM went away while we looked
        for iface in nics:
            src = iface.find("source")
            if src is None:
                continue
            if src.get("network") == name or (bridge and iface.get("type") == "bridge"
                                              and src.get("bridge") == bridge):
                found.append(dom_name)
                break
    return sorted(found)


# ---------------------------------------------------------------- create / read


def _summary(net: libvirt.virNetwork, xml: str | None = None) -> dict[str, Any]:
    info = describe_xml(xml or net.XMLDesc(0))
    info.update(active=bool(net.isActive()), autostart=bool(net.autostart()), persistent=bool(net.isPersistent()))
    info["kvmkit_bridge"] = False
    if info["mode"] == "bridge" and info["bridge"] and is_local(net.connect()):
        from kvmkit.host.bridges import load_record

        record = load_record(info["bridge"]) or {}
        if record.get("owner") == info["name"]:
            info.update(kvmkit_bridge=True, uplink=record.get("uplink"))
    return info


def create_network(conn: libvirt.virConnect, spec: NetworkSpec, *, start: bool = True, autostart: bool = False,
                   create_bridge: bool = False, uplink: str | None = None) -> dict[str, Any]:
    """Define (and by default start) a network; nothing is left behind when a step fails."""
    from kvmkit.host import bridges as host

    with libvirt_errors(f"network {spec.name}"):
        existing = [n.name() for n in conn.listAllNetworks()]
    if spec.name in existing:
        raise Conflict(f"network '{spec.name}' already exists", hint="pick another name or `kvmkit net delete` it")
    if uplink and not create_bridge:
        raise InvalidInput("--uplink needs --create-bridge", hint="add --create-bridge (bridge mode only)")
    if spec.mode != "bridge" and create_bridge:
        raise InvalidInput("--create-bridge is only for --mode bridge",
                           hint="libvirt creates the bridge of nat/isolated/route networks itself")
    if spec.mode != "bridge":
        if spec.subnet is None:
            spec = spec.model_copy(update={"subnet": free_subnet(conn)})
            spec = NetworkSpec.model_validate(spec.model_dump())
        ensure_no_overlap(conn, str(spec.subnet))
    bridge_record = None
    if spec.mode == "bridge" and spec.bridge:
        for other, other_xml in _network_xmls(conn):
            if describe_xml(other_xml)["bridge"] == spec.bridge:
                raise Conflict(f"bridge '{spec.bridge}' is already used by network '{other.name()}'",
                               hint="one libvirt network per host bridge")
        if create_bridge:
            if not is_local(conn):
                raise InvalidInput(f"--create-bridge works only on this host, not on {conn.getURI()}",
                                   hint="create the bridge on that host (kvmkit net create there), then use --bridge")
            bridge_record = host.create_bridge(spec.bridge, uplink=uplink, owner=spec.name)
        elif is_local(conn) and not host.is_bridge(host.link(spec.bridge)):
            raise NotFound(f"host bridge '{spec.bridge}' does not exist",
                           hint="create it with --create-bridge [--uplink IFACE], or name an existing bridge")
    xml = spec_to_xml(spec)
    net = None
    try:
        with libvirt_errors(f"defining network {spec.name}"):
            net = conn.networkDefineXML(xml)
            if start:
                net.create()
            if autostart:
                net.setAutostart(1)
    except BaseException:
        if net is not None:
            with libvirt_errors():
                if net.isActive():
                    net.destroy()
                net.undefine()
        if bridge_record is not None:
            host.delete_bridge(spec.bridge or spec.name, force_ports=True)
        raise
    out = _summary(net)
    out["bridge_created"] = bridge_record
    return out


def list_networks(conn: libvirt.virConnect) -> list[dict[str, Any]]:
    out = []
    for net, xml in _network_xmls(conn):
        try:
            out.append(_summary(net, xml))
        except libvirt.libvirtError:
            continue  # removed meanwhile
    return sorted(out, key=lambda d: d["name"])


def show_network(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    net = lookup(conn, name)
    with libvirt_errors(f"network {name}"):
        xml = net.XMLDesc(0)
        out = _summary(net, xml)
        out["vms"] = users(conn, name, running_only=False)
        out["running_vms"] = users(conn, name)
        out["xml"] = xml
    out["leases"] = []
    if out["active"] and out["mode"] != "bridge":
        try:
            out["leases"] = leases(conn, name)
        except OperationFailed:
            out["leases"] = None  # this driver cannot report leases (e.g. the test driver)
    return out


# ---------------------------------------------------------------- lifecycle


def start(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    net = lookup(conn, name)
    if net.isActive():
        raise InvalidState(f"network '{name}' is already running")
    info = describe_xml(net.XMLDesc(0))
    if info["mode"] not in ("bridge",) and info["subnet"]:
        ensure_no_overlap(conn, info["subnet"], ignore_network=name)
    with libvirt_errors(f"starting network {name}"):
        net.create()
    return _summary(net)


def stop(conn: libvirt.virConnect, name: str, *, force: bool = False) -> dict[str, Any]:
    net = lookup(conn, name)
    if not net.isActive():
        raise InvalidState(f"network '{name}' is not running")
    running = users(conn, name)
    if running and not force:
        raise InvalidState(f"network '{name}' is used by running VMs: {', '.join(running)}",
                           hint="shut those VMs down first, or pass --force to cut them off")
    with libvirt_errors(f"stopping network {name}"):
        net.destroy()
    return _summary(net)


def set_autostart(conn: libvirt.virConnect, name: str, on: bool) -> dict[str, Any]:
    net = lookup(conn, name)
    with libvirt_errors(f"network {name} autostart"):
        net.setAutostart(1 if on else 0)
    return _summary(net)


def delete(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Stop and undefine a network (refused while running VMs use it); remove the host bridge kvmkit made."""
    from kvmkit.host import bridges as host

    net = lookup(conn, name)
    running = users(conn, name)
    if running:
        raise Conflict(f"network '{name}' is used by running VMs: {', '.join(running)}",
                       hint="shut them down or move their NICs to another network first")
    info = describe_xml(net.XMLDesc(0))
    with libvirt_errors(f"deleting network {name}"):
        if net.isActive():
            net.destroy()
        if net.isPersistent():
            net.undefine()
    out: dict[str, Any] = {"name": name, "deleted": True, "bridge_deleted": None}
    if info["mode"] == "bridge" and info["bridge"] and is_local(conn):
        record = host.load_record(info["bridge"])
        if record is not None and record.get("owner") == name:
            out["bridge_deleted"] = host.delete_bridge(info["bridge"])
    return out


# ---------------------------------------------------------------- DHCP reservations and leases


def _update_hosts(conn: libvirt.virConnect, name: str, host: DhcpHost, command: int) -> dict[str, Any]:
    net = lookup(conn, name)
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    with libvirt_errors(f"network {name} DHCP host {host.mac}"):
        net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, host_xml(host), flags)
    return _summary(net)


def add_host(conn: libvirt.virConnect, name: str, host: DhcpHost) -> dict[str, Any]:
    """Reserve ``host.ip`` for ``host.mac`` (live and persistent)."""
    info = describe_xml(lookup(conn, name).XMLDesc(0))
    if not info["subnet"] or info["dhcp_range"] is None:
        raise InvalidState(f"network '{name}' has no DHCP server", hint="reservations need a nat/isolated/route "
                           "network with DHCP")
    if ipaddress.IPv4Address(host.ip) not in ipaddress.IPv4Network(info["subnet"]):
        raise InvalidInput(f"{host.ip} is outside network '{name}' ({info['subnet']})")
    for h in info["hosts"]:
        if h["mac"] == host.mac or h["ip"] == host.ip:
            raise Conflict(f"network '{name}' already reserves {h['ip']} for {h['mac']}",
                           hint="remove that reservation first")
    return _update_hosts(conn, name, host, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST)


def remove_host(conn: libvirt.virConnect, name: str, mac: str) -> dict[str, Any]:
    info = describe_xml(lookup(conn, name).XMLDesc(0))
    match = [h for h in info["hosts"] if h["mac"] == mac.lower()]
    if not match:
        raise NotFound(f"network '{name}' has no reservation for {mac}")
    host = DhcpHost(mac=match[0]["mac"], ip=match[0]["ip"], name=match[0]["name"])
    return _update_hosts(conn, name, host, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE)


def leases(conn: libvirt.virConnect, name: str, mac: str | None = None) -> list[dict[str, Any]]:
    """The network's DHCP leases: {mac, ip, prefix, hostname, expiry, interface}."""
    net = lookup(conn, name)
    if not net.isActive():
        raise InvalidState(f"network '{name}' is not running", hint=f"kvmkit net start {name}")
    with libvirt_errors(f"leases of network {name}"):
        raw = net.DHCPLeases(mac.lower() if mac else None)
    return [{"mac": lease["mac"], "ip": lease["ipaddr"], "prefix": lease["prefix"],
             "type": "ipv4" if lease["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4 else "ipv6",
             "hostname": None if lease.get("hostname") in (None, "?") else lease["hostname"],
             "expiry": lease["expirytime"], "interface": lease["iface"]} for lease in raw]
