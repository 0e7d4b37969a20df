"""Make sure the ``default`` NAT network and the ``default`` dir pool exist, are active and autostart."""

from __future__ import annotations

from pathlib import Path

import libvirt
from lxml import etree

DEFAULT_POOL_PATH = "/var/lib/libvirt/images"


def _network_xml() -> str:
    net = etree.Element("network")
    etree.SubElement(net, "name").text = "default"
    forward = etree.SubElement(net, "forward", mode="nat")
    etree.SubElement(etree.SubElement(forward, "nat"), "port", start="1024", end="65535")
    etree.SubElement(net, "bridge", name="virbr0", stp="on", delay="0")
    ip = etree.SubElement(net, "ip", address="192.168.122.1", netmask="255.255.255.0")
    dhcp = etree.SubElement(ip, "dhcp")
    etree.SubElement(dhcp, "range", start="192.168.122.2", end="192.168.122.254")
    return etree.tostring(net, encoding="unicode")


def _pool_xml(path: str) -> str:
    pool = etree.Element("pool", type="dir")
    etree.SubElement(pool, "name").text = "default"
    target = etree.SubElement(pool, "target")
    etree.SubElement(target, "path").text = path
    return etree.tostring(pool, encoding="unicode")


def ensure_default_network(conn: libvirt.virConnect) -> list[str]:
    done: list[str] = []
    try:
        net = conn.networkLookupByName("default")
    except libvirt.libvirtError:
        net = conn.networkDefineXML(_network_xml())
        done.append("defined network default")
    if not net.isActive():
        net.create()
        done.append("started network default")
    if not net.autostart():
        net.setAutostart(1)
        done.append("network default autostart on")
    return done


def ensure_default_pool(conn: libvirt.virConnect, path: str = DEFAULT_POOL_PATH) -> list[str]:
    done: list[str] = []
    try:
        pool = conn.storagePoolLookupByName("default")
    except libvirt.libvirtError:
        Path(path).mkdir(parents=True, exist_ok=True)
        pool = conn.storagePoolDefineXML(_pool_xml(path))
        pool.build(0)
        done.append(f"defined pool default at {path}")
    if not pool.isActive():
        pool.create()
        done.append("started pool default")
    if not pool.autostart():
        pool.setAutostart(1)
        done.append("pool default autostart on")
    return done


def prepare(conn: libvirt.virConnect) -> list[str]:
    from kvmkit.hypervisor.errors import libvirt_errors

    with libvirt_errors("host prepare"):
        return ensure_default_network(conn) + ensure_default_pool(conn)
