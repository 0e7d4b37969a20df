"""guest_addresses(): DHCP leases first, then the host's neighbour table, then the guest agent; nothing for
stopped VMs. The agent's answer is tested on the shared Debian guest (tests/service/guests/test_debian_guest.py,
test_the_agent_reports_os_hostname_file_systems_and_the_leased_ip), which has the agent this micro-guest lacks."""

from __future__ import annotations

import ipaddress

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.service.vms.guest_ip import guest_addresses, primary_ip
from tests.service.net_fixtures import *  # noqa: F403


@pytest.mark.fast
def test_stopped_and_nic_less_vms_have_no_addresses(test_conn) -> None:
    dom = test_conn.lookupByName("test")
    assert guest_addresses(test_conn, dom) == []  # the test driver's VM has no NIC with a MAC
    dom.destroy()
    assert guest_addresses(test_conn, dom) == [] and primary_ip(test_conn, dom) is None


@pytest.mark.fast
def test_an_unknown_address_source_is_refused(test_conn) -> None:
    with pytest.raises(InvalidInput, match="unknown address source"):
        guest_addresses(test_conn, test_conn.lookupByName("test"), sources=("dns",))


@pytest.mark.guest
def test_address_from_dhcp_lease(conn, netlab, micro_guest) -> None:
    net = netlab.network("lease")
    mac = random_mac()  # noqa: F405
    guest = micro_guest("l", networks=[{"network": net["name"], "mac": mac}])
    ip = guest.log.wait_for(r"KVMKIT-IP (\S+)", 90)[1]
    found = guest_addresses(conn, guest.dom)
    assert [(a["mac"], a["addr"], a["prefix"], a["source"], a["network"]) for a in found] == [
        (mac, ip, 24, "lease", net["name"])]
    assert found[0]["interface"].startswith("vnet") and primary_ip(conn, guest.dom) == ip
    guest.dom.destroy()
    assert guest_addresses(conn, guest.dom) == []


@pytest.mark.guest
def test_address_from_neighbour_table_when_there_is_no_lease(conn, netlab, micro_guest) -> None:
    """No DHCP on the network: the guest configures itself, talks to the host, and ARP tells its address."""
    net = netlab.network("arp", mode="isolated", dhcp=False)
    mine = str(ipaddress.IPv4Network(net["subnet"]).network_address + 33)
    mac = random_mac()  # noqa: F405
    guest = micro_guest("n", networks=[{"network": net["name"], "mac": mac}])
    guest.log.wait_for("KVMKIT-GUEST-READY", 90)
    rc, out = guest_run(conn, guest, f"ip addr add {mine}/24 dev eth0 && ip link set eth0 up && "  # noqa: F405
                        f"ping -c 2 -W 2 {net['gateway']}")
    assert rc == 0, out
    found = guest_addresses(conn, guest.dom)
    assert [(a["mac"], a["addr"], a["source"]) for a in found] == [(mac, mine, "arp")]
