"""``kvmkit net ...``: virtual networks (nat, isolated, route, bridge), host bridges, DHCP reservations, leases."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, table, text
from kvmkit.errors import InvalidInput

app = typer.Typer(help="virtual networks and host bridges", no_args_is_help=True, add_completion=False)
host_app = typer.Typer(help="static DHCP reservations of a network", no_args_is_help=True, add_completion=False)
app.add_typer(host_app, name="host")


@app.callback()
def _group() -> None:
    """virtual networks (nat, isolated, route, bridge), host bridges, DHCP reservations and leases"""


@host_app.callback()
def _host_group() -> None:
    """static DHCP reservations: a MAC always gets the same address"""


def parse_host(value: str, flag: str = "--reserve") -> dict[str, str]:
    """``mac=52:54:00:..,ip=10.0.0.5[,name=web]`` -> dict (validated by the spec). (Not ``--host``: that is
    the global option naming a host of the inventory.)"""
    out: dict[str, str] = {}
    for part in value.split(","):
        key, sep, val = part.partition("=")
        key = key.strip()
        if not sep or key not in ("mac", "ip", "name") or not val.strip():
            raise InvalidInput(f"bad {flag} '{value}'",
                               hint=f"use {flag} mac=52:54:00:12:34:56,ip=10.0.0.5[,name=web]")
        out[key] = val.strip()
    if "mac" not in out or "ip" not in out:
        raise InvalidInput(f"{flag} '{value}' needs mac= and ip=",
                           hint=f"e.g. {flag} mac=52:54:00:12:34:56,ip=10.0.0.5")
    return out


def _show_list(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        r["state"] = "active" if r["active"] else "inactive"
        r["dhcp"] = f"{r['dhcp_range']['start']}-{r['dhcp_range']['end']}" if r.get("dhcp_range") else ""
    table(rows, ["name", "state", "autostart", "mode", "bridge", "subnet", "dhcp"])


def _show_one(d: dict[str, Any]) -> None:
    out = console()
    for key in ("name", "uuid", "mode", "active", "autostart", "bridge", "forward_dev", "subnet", "gateway",
                "domain", "dns", "kvmkit_bridge", "uplink"):
        if d.get(key) not in (None, ""):
            out.print(f"{key:<14} {d[key]}")
    if d.get("dhcp_range"):
        out.print(f"{'dhcp':<14} {d['dhcp_range']['start']} - {d['dhcp_range']['end']}")
    for h in d.get("hosts", []):
        out.print(f"{'reservation':<14} {h['mac']} -> {h['ip']} {h.get('name') or ''}")
    if "vms" in d:
        out.print(f"{'vms':<14} {', '.join(d['vms']) or '-'} (running: {', '.join(d['running_vms']) or '-'})")
    for lease in d.get("leases") or []:
        out.print(f"{'lease':<14} {lease['ip']}/{lease['prefix']} {lease['mac']} {lease.get('hostname') or ''}")


@app.command("list")
def list_() -> None:
    """All networks: state, autostart, mode, bridge, subnet, DHCP range."""
    from kvmkit.service.net.networks import list_networks

    emit(list_networks(connection()), _show_list)


@app.command()
def show(name: str, xml: bool = typer.Option(False, "--xml", help="print the libvirt XML")) -> None:
    """One network with its reservations, VMs and leases."""
    from kvmkit.service.net.networks import show_network

    data = show_network(connection(), name)
    if xml:
        emit(data["xml"], text)
        return
    data.pop("xml")
    emit(data, _show_one)


@app.command()
def create(
    name: str = typer.Argument(..., help="network name (bridge mode: also the bridge name unless --bridge)"),
    mode: str = typer.Option("nat", "--mode", help="nat | isolated | route | bridge"),
    subnet: str = typer.Option(None, "--subnet", help="IPv4 subnet, e.g. 192.168.100.0/24 (default: a free one)"),
    gateway: str = typer.Option(None, "--gateway", help="the host's address in the subnet (default: first)"),
    dhcp_range: str = typer.Option(None, "--dhcp-range", help="START-END (default: .2-.254 on a /24)"),
    no_dhcp: bool = typer.Option(False, "--no-dhcp", help="no DHCP server on this network"),
    no_dns: bool = typer.Option(False, "--no-dns", help="no DNS server on this network"),
    domain: str = typer.Option(None, "--domain", help="DNS domain for the guests' names"),
    reserve: list[str] = typer.Option([], "--reserve", help="static DHCP reservation mac=..,ip=..[,name=..] "
                                      "(repeatable)"),
    bridge: str = typer.Option(None, "--bridge", help="bridge mode: the host bridge; else libvirt's bridge name"),
    forward_dev: str = typer.Option(None, "--forward-dev", help="nat/route: host interface to forward through"),
    create_bridge: bool = typer.Option(False, "--create-bridge", help="bridge mode: create the host bridge"),
    uplink: str = typer.Option(None, "--uplink", help="with --create-bridge: enslave IFACE, moving its addresses"),
    autostart: bool = typer.Option(False, "--autostart", help="start with the host"),
    no_start: bool = typer.Option(False, "--no-start", help="define only"),
) -> None:
    """Create a network. Refuses a subnet that overlaps a host route, address or another network."""
    from kvmkit.service.net.networks import create_network
    from kvmkit.spec.network import NetworkSpec

    start = end = None
    if dhcp_range:
        start, sep, end = dhcp_range.partition("-")
        if not sep:
            raise InvalidInput(f"bad --dhcp-range '{dhcp_range}'", hint="use START-END, e.g. 10.0.0.100-10.0.0.200")
    spec = NetworkSpec.model_validate({
        "name": name, "mode": mode, "subnet": subnet, "gateway": gateway, "dhcp": not no_dhcp,
        "dhcp_start": start, "dhcp_end": end, "dns": not no_dns, "domain": domain,
        "hosts": [parse_host(h) for h in reserve], "bridge": bridge, "forward_dev": forward_dev})
    data = create_network(connection(), spec, start=not no_start, autostart=autostart,
                          create_bridge=create_bridge, uplink=uplink)

    def human(d: dict[str, Any]) -> None:
        subnet = f", {d['subnet']}" if d.get("subnet") else ""
        console().print(f"network {d['name']} created ({d['mode']}{subnet}, bridge {d['bridge']})")
        for w in (d.get("bridge_created") or {}).get("warnings", []):
            console().print(f"[yellow]warning:[/] {w}")

    emit(data, human)


@app.command()
def start(name: str) -> None:
    """Start a network."""
    from kvmkit.service.net import networks
    emit(networks.start(connection(), name), lambda d: console().print(f"network {d['name']} started"))


@app.command()
def stop(name: str, force: bool = typer.Option(False, "--force", help="stop even while running VMs use it")) -> None:
    """Stop a network (refused while running VMs use it, unless --force)."""
    from kvmkit.service.net import networks
    emit(networks.stop(connection(), name, force=force), lambda d: console().print(f"network {d['name']} stopped"))


@app.command()
def autostart(name: str, off: bool = typer.Option(False, "--off", help="turn autostart off")) -> None:
    """Start the network with the host (or not, with --off)."""
    from kvmkit.service.net import networks
    emit(networks.set_autostart(connection(), name, not off),
         lambda d: console().print(f"network {d['name']} autostart {'on' if d['autostart'] else 'off'}"))


@app.command()
def delete(name: str) -> None:
    """Stop and remove a network (refused while running VMs use it); removes a host bridge kvmkit created."""
    from kvmkit.service.net import networks
    def human(d: dict[str, Any]) -> None:
        console().print(f"network {d['name']} deleted")
        if d.get("bridge_deleted"):
            console().print(f"host bridge {d['bridge_deleted']['bridge']} removed")

    emit(networks.delete(connection(), name), human)


@app.command()
def leases(name: str, mac: str = typer.Option(None, "--mac", help="only this MAC")) -> None:
    """DHCP leases handed out by a network."""
    from kvmkit.service.net import networks
    emit(networks.leases(connection(), name, mac), lambda rows: table(rows, ["ip", "mac", "hostname", "expiry"]))


@host_app.command("add")
def host_add(network: str, host: str = typer.Argument(..., help="mac=..,ip=..[,name=..]")) -> None:
    """Reserve an address for a MAC (applies live and persistently)."""
    from kvmkit.service.net.networks import add_host
    from kvmkit.spec.network import DhcpHost

    data = add_host(connection(), network, DhcpHost(**parse_host(host, "the reservation")))
    emit(data, lambda d: console().print(f"{network}: {len(d['hosts'])} reservation(s)"))


@host_app.command("remove")
def host_remove(network: str, mac: str) -> None:
    """Drop the reservation of a MAC."""
    from kvmkit.service.net.networks import remove_host

    data = remove_host(connection(), network, mac)
    emit(data, lambda d: console().print(f"{network}: {len(d['hosts'])} reservation(s)"))
