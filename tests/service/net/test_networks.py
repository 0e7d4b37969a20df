"""Virtual networks: XML shape (fast), subnet overlap and lifecycle on qemu:///system, and micro-guests
getting DHCP leases, static reservations, isolation, and addresses from a DHCP server behind a host bridge."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.host import bridges as host
from kvmkit.service.net import networks
from kvmkit.spec.network import NetworkSpec
from kvmkit.xml.network import describe_xml, spec_to_xml
from tests.service.net_fixtures import *  # noqa: F403

IP_RE = r"KVMKIT-IP (\d+\.\d+\.\d+\.\d+)"

# ---------------------------------------------------------------- tier 1: specs, XML, the test driver


@pytest.mark.fast
def test_nat_spec_xml_defaults_and_reservations() -> None:
    spec = NetworkSpec(name="lab", subnet="10.213.7.0/24", domain="lab.test",
                       hosts=[{"mac": "52:54:00:AA:BB:CC", "ip": "10.213.7.50", "name": "web"}])
    info = describe_xml(spec_to_xml(spec))
    assert info["mode"] == "nat" and info["subnet"] == "10.213.7.0/24" and info["gateway"] == "10.213.7.1"
    assert info["dhcp_range"] == {"start": "10.213.7.2", "end": "10.213.7.254"}
    assert info["hosts"] == [{"mac": "52:54:00:aa:bb:cc", "ip": "10.213.7.50", "name": "web"}]
    assert info["domain"] == "lab.test" and info["dns"] is True


@pytest.mark.fast
def test_isolated_route_bridge_xml() -> None:
    iso = describe_xml(spec_to_xml(NetworkSpec(name="i", mode="isolated", subnet="10.213.8.0/25", dns=False,
                                               dhcp=False)))
    assert iso["mode"] == "isolated" and iso["dns"] is False and iso["dhcp_range"] is None
    assert iso["subnet"] == "10.213.8.0/25"
    routed = describe_xml(spec_to_xml(NetworkSpec(name="r", mode="route", subnet="10.213.9.0/24",
                                                  forward_dev="eth0", dhcp_start="10.213.9.100",
                                                  dhcp_end="10.213.9.200")))
    assert routed["mode"] == "route" and routed["forward_dev"] == "eth0"
    assert routed["dhcp_range"] == {"start": "10.213.9.100", "end": "10.213.9.200"}
    br = describe_xml(spec_to_xml(NetworkSpec(name="br0", mode="bridge")))
    assert br["mode"] == "bridge" and br["bridge"] == "br0" and br["subnets"] == []


@pytest.mark.fast
@pytest.mark.parametrize(("fields", "needle"), [
    ({"subnet": "10.0.0.5/24"}, "host bits"),
    ({"subnet": "10.0.0.0/24", "dhcp_start": "10.0.0.1"}, "gateway"),
    ({"subnet": "10.0.0.0/24", "hosts": [{"mac": "52:54:00:00:00:01", "ip": "10.0.1.5"}]}, "not a host address"),
    ({"subnet": "10.0.0.0/24", "hosts": [{"mac": "nope", "ip": "10.0.0.5"}]}, "MAC"),
    ({"mode": "bridge", "subnet": "10.0.0.0/24"}, "bridge mode"),
    ({"mode": "nat", "bridge": "a-bridge-name-too-long"}, "interface name"),
    ({"name": "bad name"}, "network name"),
])
def test_spec_rejects_bad_input(fields: dict, needle: str) -> None:
    fields.setdefault("name", "n1")
    with pytest.raises(ValidationError, match=needle):
        NetworkSpec(**fields)


@pytest.mark.fast
def test_create_show_delete_on_test_driver(test_conn) -> None:
    with pytest.raises(Conflict, match="libvirt network 'default'"):
        networks.create_network(test_conn, NetworkSpec(name="n1", subnet="192.168.122.0/25"))
    made = networks.create_network(test_conn, NetworkSpec(name="n1", mode="isolated"), autostart=True)
    assert made["active"] and made["autostart"] and made["subnet"] == "192.168.100.0/24"
    assert "n1" in [n["name"] for n in networks.list_networks(test_conn)]
    assert networks.show_network(test_conn, "n1")["vms"] == []
    with pytest.raises(Conflict, match="already exists"):
        networks.create_network(test_conn, NetworkSpec(name="n1", mode="isolated"))
    assert networks.delete(test_conn, "n1")["deleted"]
    with pytest.raises(NotFound, match="'n1' does not exist"):
        networks.show_network(test_conn, "n1")


# ---------------------------------------------------------------- tier 2: qemu:///system and the host


@pytest.mark.guest
def test_overlap_with_host_address_route_or_network_is_refused(conn, netlab) -> None:
    a, _b = netlab.veth()
    mine = ipaddress.IPv4Network(netlab.subnet())
    host.run_ip("addr", "add", f"{mine.network_address + 2}/24", "dev", a)
    with pytest.raises(Conflict, match=f"address {mine.network_address + 2}/24 on host interface {a}"):
        netlab.network("a", subnet=str(mine))
    routed = ipaddress.IPv4Network(netlab.subnet())
    host.run_ip("route", "add", str(routed), "via", str(mine.network_address + 1), "dev", a)
    half = list(routed.subnets(new_prefix=25))[1]
    with pytest.raises(Conflict, match=f"host route {routed} via {mine.network_address + 1} dev {a}"):
        netlab.network("b", subnet=str(half))
    made = netlab.network("c", mode="route")
    assert made["active"] and made["mode"] == "route"
    with pytest.raises(Conflict, match=f"libvirt network '{made['name']}'"):
        netlab.network("d", subnet=made["subnet"])
    assert [n["name"] for n in networks.list_networks(conn) if n["name"].startswith(netlab.prefix)] == [made["name"]]
    # a defined network whose subnet got taken meanwhile is refused at start, naming what took it
    later = ipaddress.IPv4Network(netlab.subnet())
    spec = NetworkSpec(name=f"{netlab.prefix}e", mode="isolated", subnet=str(later))
    netlab.networks.append(spec.name)
    assert not networks.create_network(conn, spec, start=False)["active"]
    host.run_ip("addr", "add", f"{later.network_address + 200}/24", "dev", a)
    with pytest.raises(Conflict, match=f"address {later.network_address + 200}/24 on host interface {a}"):
        networks.start(conn, spec.name)


@pytest.mark.guest
def test_cli_create_list_stop_start_autostart_delete(conn, netlab) -> None:
    name, subnet = f"{netlab.prefix}cli", netlab.subnet()
    netlab.networks.append(name)

    def kvmkit(*args: str, ok: bool = True) -> dict:
        res = subprocess.run([str(Path(sys.executable).parent / "kvmkit"), "--json", "net", *args],
                             capture_output=True, text=True, timeout=60)
        assert (res.returncode == 0) == ok, res.stderr
        return json.loads(res.stdout) if res.stdout.strip() else {}

    made = kvmkit("create", name, "--mode", "isolated", "--subnet", subnet, "--reserve",
                  f"mac=52:54:00:12:34:56,ip={ipaddress.IPv4Network(subnet).network_address + 9},name=db")
    assert made["mode"] == "isolated" and made["active"] and made["hosts"][0]["name"] == "db"
    assert name in [n["name"] for n in kvmkit("list")]
    assert not kvmkit("stop", name)["active"]
    assert kvmkit("start", name)["active"]
    assert kvmkit("autostart", name)["autostart"]
    assert not kvmkit("autostart", name, "--off")["autostart"]
    assert kvmkit("leases", name) == []
    extra = str(ipaddress.IPv4Network(subnet).network_address + 10)
    hosts = kvmkit("host", "add", name, f"mac=52:54:00:12:34:57,ip={extra}")["hosts"]
    assert [h["ip"] for h in hosts][-1] == extra
    assert kvmkit("host", "add", name, f"mac=52:54:00:12:34:58,ip={extra}", ok=False)["code"] == "conflict"
    assert [h["mac"] for h in kvmkit("host", "remove", name, "52:54:00:12:34:56")["hosts"]] == ["52:54:00:12:34:57"]
    assert kvmkit("create", f"{name}y", "--reserve", "mac=zz,ip=1.2.3.4", "--subnet", subnet,
                  ok=False)["code"] == "invalid"
    err = kvmkit("create", f"{name}x", "--subnet", subnet, ok=False)
    assert err["code"] == "conflict" and name in err["error"]
    assert kvmkit("delete", name)["deleted"]
    assert kvmkit("show", name, ok=False)["code"] == "not_found"


@pytest.mark.guest
def test_nat_two_guests_get_leases_in_range_and_ping_each_other(conn, netlab, micro_guest) -> None:
    net = netlab.network("nat")
    lo, hi = (ipaddress.IPv4Address(net["dhcp_range"][k]) for k in ("start", "end"))
    macs = [random_mac(), random_mac()]  # noqa: F405
    guests = [micro_guest(s, networks=[{"network": net["name"], "mac": m}]) for s, m in zip("ab", macs, strict=True)]
    ips = [g.log.wait_for(IP_RE, 90)[1] for g in guests]
    deadline = time.monotonic() + 120  # libvirt records a lease a moment after the guest has bound it
    while True:
        leases = {lease["mac"]: lease["ip"] for lease in networks.leases(conn, net["name"])}
        if set(macs) <= set(leases) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for mac, ip in zip(macs, ips, strict=True):
        assert leases[mac] == ip and lo <= ipaddress.IPv4Address(ip) <= hi
    for guest, other in ((guests[0], ips[1]), (guests[1], ips[0])):
        rc, out = guest_run(conn, guest, f"ping -c 3 -W 2 {other}")  # noqa: F405
        assert rc == 0, out
    with pytest.raises(Conflict, match=f"{guests[0].name}, {guests[1].name}"):
        networks.delete(conn, net["name"])
    with pytest.raises(InvalidState, match=f"used by running VMs: {guests[0].name}, {guests[1].name}"):
        networks.stop(conn, net["name"])
    assert networks.show_network(conn, net["name"])["running_vms"] == [g.name for g in guests]


@pytest.mark.guest
def test_static_reservation_gets_exactly_that_address(conn, netlab, micro_guest) -> None:
    mac = random_mac()  # noqa: F405
    subnet = ipaddress.IPv4Network(netlab.subnet())
    want = str(subnet.network_address + 77)
    net = netlab.network("res", subnet=str(subnet), dhcp_start=str(subnet.network_address + 100),
                         dhcp_end=str(subnet.network_address + 120), hosts=[{"mac": mac, "ip": want, "name": "fixed"}])
    guest = micro_guest("r", networks=[{"network": net["name"], "mac": mac}])
    assert guest.log.wait_for(IP_RE, 90)[1] == want
    assert [lease["ip"] for lease in networks.leases(conn, net["name"], mac)] == [want]


@pytest.mark.guest
def test_isolated_guest_cannot_reach_guest_on_another_network(conn, netlab, micro_guest) -> None:
    iso = netlab.network("iso", mode="isolated")
    other = netlab.network("oth", mode="isolated")
    a = micro_guest("a", networks=[{"network": iso["name"], "mac": random_mac()}])  # noqa: F405
    b = micro_guest("b", networks=[{"network": other["name"], "mac": random_mac()}])  # noqa: F405
    a.log.wait_for(IP_RE, 90)
    ip_b = b.log.wait_for(IP_RE, 90)[1]
    rc, out = guest_run(conn, a, f"ping -c 1 -W 2 {iso['gateway']}")  # noqa: F405
    assert rc == 0, f"guest cannot even reach its own network's host address: {out}"
    rc, out = guest_run(conn, a, f"ping -c 3 -W 2 {ip_b}")  # noqa: F405
    assert rc != 0, f"isolated guest reached {ip_b} on another network: {out}"


@pytest.mark.guest
def test_bridged_guest_gets_address_from_dhcp_server_in_namespace(conn, netlab, micro_guest) -> None:
    """Host bridge kbXXXXXX (created by kvmkit, uplink = a veth) <-> namespace running udhcpd."""
    ns = netlab.netns()
    uplink, peer = netlab.veth(ns)
    lan = ipaddress.IPv4Network(netlab.subnet())
    host.run_ip("addr", "add", f"{lan.network_address + 2}/24", "dev", uplink)  # the host's LAN address
    server = netlab.udhcpd(ns, peer, str(lan))
    br = netlab.ifname("kb")
    net = netlab.network(br, mode="bridge", bridge=br, create_bridge=True, uplink=uplink)
    assert net["kvmkit_bridge"] and net["bridge_created"]["uplink"] == uplink
    assert [a["local"] for a in host.addresses(br) if a["family"] == "inet"] == [str(lan.network_address + 2)]
    guest = micro_guest("br", networks=[{"network": net["name"], "mac": random_mac()}])  # noqa: F405
    ip = ipaddress.IPv4Address(guest.log.wait_for(IP_RE, 90)[1])
    assert lan.network_address + 100 <= ip <= lan.network_address + 150
    rc, out = guest_run(conn, guest, f"ping -c 2 -W 2 {server}")  # noqa: F405
    assert rc == 0, out
    with pytest.raises(Conflict, match=guest.name):
        networks.delete(conn, net["name"])
    guest.dom.destroy()
    gone = networks.delete(conn, net["name"])
    assert gone["bridge_deleted"]["deleted"] and host.link(br) is None
    assert [a["local"] for a in host.addresses(uplink) if a["family"] == "inet"] == [str(lan.network_address + 2)]


@pytest.mark.guest
def test_bridge_mode_needs_an_existing_bridge(netlab) -> None:
    with pytest.raises(NotFound, match="does not exist"):
        netlab.network("nob", mode="bridge", bridge=netlab.ifname("kb"))
    with pytest.raises(InvalidInput, match="--create-bridge"):
        netlab.network("upl", mode="bridge", bridge=netlab.ifname("kb"), uplink="eth0")
