"""list_vms (one bulk libvirt call) and show_vm shapes, on test:///default and qemu:///system."""

from __future__ import annotations

import time

import pytest
from lxml import etree

from kvmkit.errors import NotFound
from kvmkit.service.vms.query import list_vms, lookup, show_vm

ROW_KEYS = {"name", "uuid", "state", "state_reason", "vcpus", "max_vcpus", "memory_mib", "max_memory_mib", "host"}


@pytest.mark.fast
def test_list_on_test_driver_is_one_call_and_fast(test_conn):
    base = etree.fromstring(test_conn.lookupByName("test").XMLDesc(0).encode())
    base.remove(base.find("uuid"))
    for i in range(200):
        base.find("name").text = f"many-{i:03d}"
        test_conn.defineXML(etree.tostring(base, encoding="unicode"))
    counting = CountingConn(test_conn)  # fast because it is one bulk call, however many domains (bench/ times it)
    rows = list_vms(counting)
    assert len(rows) == 201 and counting.calls == ["getAllDomainStats", "getURI"]
    assert all(set(r) == ROW_KEYS for r in rows)
    assert {r["state"] for r in rows} == {"running", "shut-off"}
    assert [r["name"] for r in list_vms(test_conn, include_inactive=False)] == ["test"]


@pytest.mark.fast
def test_show_on_test_driver(test_conn):
    info = show_vm(test_conn, "test", xml=True)
    assert info["state"] == "running" and info["persistent"] is True
    assert info["xml"].startswith("<domain")
    with pytest.raises(NotFound, match="VM 'nope' not found"):
        lookup(test_conn, "nope")


@pytest.mark.guest
def test_list_and_show_real_guest(conn, micro_guest):
    guest = micro_guest("q", start=True, vcpus=1, max_vcpus=2, memory_mib=256, max_memory_mib=512,
                        networks=[{"network": "default", "mac": "52:54:00:11:22:33"}])
    off = micro_guest("off", start=False)
    guest.log.wait_for("KVMKIT-GUEST-READY")
    deadline = time.monotonic() + 60
    while True:  # the balloon reaches its target once the guest's balloon driver runs
        rows = {r["name"]: r for r in list_vms(conn)}
        row = rows[guest.name]
        if row["memory_mib"] == 256 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert row["state"] == "running" and row["vcpus"] == 1 and row["max_vcpus"] == 2
    assert row["memory_mib"] == 256 and row["max_memory_mib"] == 512 and row["host"] == "qemu:///system"
    assert rows[off.name]["state"] == "shut-off" and rows[off.name]["vcpus"] == 1
    assert off.name not in {r["name"] for r in list_vms(conn, include_inactive=False)}
    info = show_vm(conn, guest.name)
    assert info["macs"] == ["52:54:00:11:22:33"] and info["nics"][0]["source"] == "default"
    assert info["virt_type"] in ("kvm", "qemu") and info["virt_type_reason"]
    assert info["kernel"] and info["serial_log"].endswith(".serial.log")
    assert info["autostart"] is False and info["persistent"] is True and "xml" not in info
    assert show_vm(conn, off.name, xml=True)["xml"].startswith("<domain")


class CountingConn:
    """Passes every call to the real connection and counts them (evidence of ONE bulk call)."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        attr = getattr(self._conn, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            self.calls.append(name)
            return attr(*args, **kwargs)

        return call


@pytest.mark.fast
def test_list_makes_one_bulk_libvirt_call(conn, micro_guest):
    micro_guest("a", start=False)
    micro_guest("b", start=False)
    counting = CountingConn(conn)
    rows = list_vms(counting)
    assert len(rows) >= 2
    assert counting.calls == ["getAllDomainStats", "getURI"]  # getURI is answered locally, no per-domain calls


@pytest.mark.guest
def test_show_and_list_report_the_guest_ip_from_dhcp(conn, micro_guest):
    guest = micro_guest("ip", networks=[{"network": "default"}])
    ip = guest.log.wait_for(r"KVMKIT-IP (\S+)", timeout=60).group(1)
    deadline = time.monotonic() + 120  # a guard
    while show_vm(conn, guest.name)["ip"] != ip and time.monotonic() < deadline:
        time.sleep(0.5)  # libvirt records the lease a moment after the guest prints it
    shown = show_vm(conn, guest.name)
    assert shown["ip"] == ip
    assert shown["addresses"][0]["source"] == "lease"
    row = next(r for r in list_vms(conn, ips=True) if r["name"] == guest.name)
    assert row["ip"] == ip


# Valid domains a VM spec cannot hold: libvirt takes them, so show must describe them (never fail).
ODD_DOMAINS = {
    "dies": ("", "<cpu><topology sockets='1' dies='2' cores='1' threads='1'/></cpu>", ""),
    "failover": ("", "", "<interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/>"
                 "<model type='virtio'/><teaming type='persistent'/><alias name='ua-backup0'/></interface>"
                 "<interface type='network'><mac address='52:54:00:aa:bb:cc'/><source network='default'/>"
                 "<model type='virtio'/><teaming type='transient' persistent='ua-backup0'/></interface>"),
    "initrd": ("<initrd>/boot/initrd.img</initrd>", "", ""),
}


def odd_domain(name: str, case: str) -> str:
    os_extra, cpu, devices = ODD_DOMAINS[case]
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>2</vcpu><os>"
            f"<type arch='x86_64' machine='pc'>hvm</type>{os_extra}</os>{cpu}<devices>{devices}</devices></domain>")


@pytest.mark.fast
@pytest.mark.parametrize("case", sorted(ODD_DOMAINS))
def test_show_describes_valid_domains_a_spec_cannot_hold(test_conn, case):
    test_conn.defineXML(odd_domain(f"odd-{case}", case))
    info = show_vm(test_conn, f"odd-{case}")
    assert info["name"] == f"odd-{case}" and info["max_vcpus"] == 2
    if case == "dies":
        assert info["topology"] == {"sockets": 1, "dies": 2, "cores": 1, "threads": 1}
    if case == "failover":
        assert info["macs"] == ["52:54:00:aa:bb:cc"]
    if case == "initrd":
        assert info["kernel"] is None and info["initrd"] is None
