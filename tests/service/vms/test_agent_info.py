"""The guest agent as vm show reports it: channel state from the live XML, guestInfo's typed parameters nested.

The agent itself is exercised on a real debian-12 guest in tests/service/guests/test_debian_guest.py; here the
parsing of what libvirt hands back (the exact keys virDomainGetGuestInfo returns) and the channel states."""

from __future__ import annotations

import pytest

from kvmkit.service.vms import agent

FLAT = {  # as libvirt-python returns virDomainGetGuestInfo for a Debian 12 guest
    "os.id": "debian", "os.name": "Debian GNU/Linux", "os.pretty-name": "Debian GNU/Linux 12 (bookworm)",
    "os.version": "12 (bookworm)", "os.version-id": "12", "os.kernel-release": "6.1.0-57-cloud-amd64",
    "os.machine": "x86_64", "hostname": "web-1", "timezone.name": "UTC", "timezone.offset": 0,
    "user.count": 1, "user.0.name": "debian", "user.0.login-time": 1700000000000,
    "fs.count": 1, "fs.0.name": "vda", "fs.0.mountpoint": "/", "fs.0.fstype": "ext4",
    "fs.0.total-bytes": 4143677440, "fs.0.used-bytes": 445964288, "fs.0.disk.count": 1,
    "fs.0.disk.0.alias": "vda", "fs.0.disk.0.serial": "",
    "if.count": 2, "if.0.name": "lo", "if.0.hwaddr": "00:00:00:00:00:00", "if.0.addr.count": 1,
    "if.0.addr.0.type": "ipv4", "if.0.addr.0.addr": "127.0.0.1", "if.0.addr.0.prefix": 8,
    "if.1.name": "eth0", "if.1.hwaddr": "52:54:00:AA:BB:CC", "if.1.addr.count": 2,
    "if.1.addr.0.type": "ipv4", "if.1.addr.0.addr": "192.168.122.50", "if.1.addr.0.prefix": 24,
    "if.1.addr.1.type": "ipv6", "if.1.addr.1.addr": "fe80::5054:ff:feaa:bbcc", "if.1.addr.1.prefix": 64,
}


@pytest.mark.fast
def test_guest_info_is_nested() -> None:
    info = agent.parse_guest_info(FLAT)
    assert info["os"]["id"] == "debian" and info["os"]["version_id"] == "12"
    assert info["os"]["kernel_release"] == "6.1.0-57-cloud-amd64"
    assert info["hostname"] == "web-1" and info["timezone"] == {"name": "UTC", "offset": 0}
    assert info["users"] == [{"name": "debian", "domain": None, "login_time": 1700000000000}]
    assert info["filesystems"] == [{"mountpoint": "/", "device": "vda", "fstype": "ext4", "total_bytes": 4143677440,
                                    "used_bytes": 445964288, "disks": ["vda"]}]
    eth0 = info["interfaces"][1]
    assert eth0["name"] == "eth0" and eth0["mac"] == "52:54:00:aa:bb:cc"
    assert eth0["addresses"][0] == {"type": "ipv4", "addr": "192.168.122.50", "prefix": 24}
    assert agent.parse_guest_info({}) == {"os": None, "hostname": None, "timezone": None, "users": [],
                                          "filesystems": [], "interfaces": []}


def _xml(state: str | None, *, running: bool = True, channel: bool = True) -> str:
    target = f"<target type='virtio' name='org.qemu.guest_agent.0'{f' state={state!r}' if state else ''}/>"
    chan = f"<channel type='unix'>{target}</channel>" if channel else ""
    ident = " id='3'" if running else ""
    return f"<domain type='qemu'{ident}><name>x</name><devices>{chan}</devices></domain>"


@pytest.mark.fast
def test_channel_states() -> None:
    assert agent.channel_state(None, _xml("connected")) == "connected"  # type: ignore[arg-type]
    assert agent.channel_state(None, _xml("disconnected")) == "disconnected"  # type: ignore[arg-type]
    assert agent.channel_state(None, _xml(None, running=False)) == "off"  # type: ignore[arg-type]
    assert agent.channel_state(None, _xml(None, channel=False)) == "none"  # type: ignore[arg-type]


@pytest.mark.guest
def test_show_reports_no_agent_for_the_micro_guest(micro_guest, conn) -> None:
    from kvmkit.errors import InvalidState
    from kvmkit.service.guests.exec import exec_command
    from kvmkit.service.vms.query import show_vm

    g = micro_guest("a")
    shown = show_vm(conn, g.name)["agent"]
    assert shown == {"configured": False, "state": "none", "connected": False}
    with pytest.raises(InvalidState, match="no guest-agent channel"):
        exec_command(conn, g.name, ["true"])
    from tests.support.cli_run import kvmkit

    res = kvmkit("vm", "exec", g.name, "--", "sh", "-c", "exit 3", check=False)
    assert res.returncode == 1 and res.stderr.startswith("error: cannot run a command in the guest")
    res = kvmkit("vm", "exec", g.name, check=False)
    assert res.returncode == 2  # no command: a usage error


@pytest.mark.guest
def test_eject_waits_for_the_guest_unless_forced(conn, prefix) -> None:
    from pathlib import Path

    import libvirt

    from kvmkit.errors import InvalidState, NotFound
    from kvmkit.service.vms import seed
    from kvmkit.service.vms.create import create_vm

    name = f"{prefix}seed"
    create_vm(conn, {"name": name, "micro": True, "memory_mib": 256, "nics": [],
                     "cloud_init": {"hostname": "s1", "eject": True}})
    vol = Path(f"/var/lib/libvirt/images/{name}-cidata.img")
    assert vol.exists() and seed.seed_disk(conn, conn.lookupByName(name))["eject"] == "pending"
    with pytest.raises(InvalidState, match="not running"):  # nobody to ask whether cloud-init ran
        seed.eject(conn, name)
    assert seed.eject_if_done(conn, conn.lookupByName(name)) is None and vol.exists()
    res = seed.eject(conn, name, force=True)
    assert res["forced"] and not vol.exists()
    xml = conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert "cidata.img" not in xml and "<kvmkit:cidata_eject>done</kvmkit:cidata_eject>" in xml
    with pytest.raises(NotFound, match="no cloud-init seed"):
        seed.eject(conn, name, force=True)
