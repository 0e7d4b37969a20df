"""guest_addresses(): DHCP leases first, then the host's neighbour table, then the guest agent; nothing for
stopped VMs."""

from __future__ import annotations

import ipaddress
import time

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.service.vms.guest_ip import guest_addresses, primary_ip
from tests.service.net_fixtures import *  # noqa: F403


@pytest.mark.fast
def test_stopped_and_nic_less_vms_have_no_addresses(test_conn) -> None:
    dom = test_conn.lookupByName("test")
    assert guest_addresses(test_conn, dom) == []  # the test driver's VM has no NIC with a MAC
    dom.destroy()
    assert guest_addresses(test_conn, dom) == [] and primary_ip(test_conn, dom) is None


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


def _debian_xml(name: str, image: dict[str, str], disk: str, log: str, network: str, mac: str) -> str:
    """A Debian guest with one NIC on ``network`` and a qemu-guest-agent channel."""
    dom = etree.Element("domain", type="qemu")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "1024"
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    for tag in ("kernel", "initrd", "cmdline"):
        etree.SubElement(os_el, tag).text = image[tag]
    etree.SubElement(etree.SubElement(dom, "features"), "acpi")
    devices = etree.SubElement(dom, "devices")
    d = etree.SubElement(devices, "disk", type="file", device="disk")
    etree.SubElement(d, "driver", name="qemu", type="qcow2")
    etree.SubElement(d, "source", file=disk)
    etree.SubElement(d, "target", dev="vda", bus="virtio")
    iface = etree.SubElement(devices, "interface", type="network")
    etree.SubElement(iface, "source", network=network)
    etree.SubElement(iface, "mac", address=mac)
    etree.SubElement(iface, "model", type="virtio")
    channel = etree.SubElement(devices, "channel", type="unix")
    etree.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    serial = etree.SubElement(devices, "serial", type="pty")
    etree.SubElement(serial, "log", file=log, append="off")
    etree.SubElement(serial, "target", port="0")
    rng = etree.SubElement(devices, "rng", model="virtio")
    etree.SubElement(rng, "backend", model="random").text = "/dev/urandom"
    return etree.tostring(dom, encoding="unicode")


@pytest.mark.full
@pytest.mark.timeout(1200)
def test_address_from_guest_agent_matches_the_lease(conn, netlab, workdir) -> None:
    from kvmkit.images import debian, qemu_img
    from kvmkit.service.net import networks
    image = debian.build(None)
    net = netlab.network("agent")
    mac = random_mac()  # noqa: F405
    disk = workdir / "agent.qcow2"
    qemu_img.create(disk, "qcow2", 0, backing=image["path"], backing_fmt="qcow2")
    dom = conn.defineXML(_debian_xml(f"{netlab.prefix}agent", image, str(disk), str(workdir / "agent.log"),
                                     net["name"], mac))
    dom.create()
    deadline = time.monotonic() + 900  # ~1 min on an idle host; TCG on a shared CPU can take much longer
    agent: list[dict] = []
    while time.monotonic() < deadline and not agent:
        agent = [a for a in guest_addresses(conn, dom, sources=("agent",)) if a["type"] == "ipv4"]
        time.sleep(3)
    assert agent, "the guest agent never reported an IPv4 address"
    lease = [a["ip"] for a in networks.leases(conn, net["name"], mac)]
    assert [(a["mac"], a["addr"], a["source"]) for a in agent] == [(mac, lease[0], "agent")]
    assert [a["source"] for a in guest_addresses(conn, dom)] == ["lease"]  # leases answer first
    with pytest.raises(InvalidInput, match="unknown address source"):
        guest_addresses(conn, dom, sources=("dns",))
