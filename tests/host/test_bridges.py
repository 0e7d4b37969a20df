"""Host bridges through iproute2: create with/without an uplink, move addresses and routes, roll back when
the bridge does not come up, and undo exactly what kvmkit did. Uplinks are veth pairs whose far end lives in
a network namespace, so no real host interface is touched."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys

import pytest

from kvmkit.errors import Conflict, InvalidInput, NotFound, OperationFailed
from kvmkit.host import bridges as host
from tests.service.net_fixtures import *  # noqa: F403

_TRANSIENT = ("virbr", "vnet", "kb", "kv", "kp", "tap", "macvtap")  # other tests' and VMs' links come and go


def _snapshot(exclude: set[str]) -> tuple[list, list]:
    """Addresses and routes of the host's lasting interfaces (not the ones tests and VMs create)."""
    def keep(dev: str | None) -> bool:
        return bool(dev) and dev not in exclude and not str(dev).startswith(_TRANSIENT)

    addrs = sorted((a["ifname"], a["local"], a["prefixlen"]) for a in host.addresses() if keep(a["ifname"]))
    rts = sorted((r["family"], r["dst"], r.get("gateway") or "", r.get("dev") or "") for r in host.routes()
                 if keep(r.get("dev")))
    return addrs, rts


def _inet(ifname: str) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for a in host.addresses(ifname) if a["family"] == "inet"]


def _uplink(netlab, *, peer_up: bool = True) -> tuple[str, str, ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """A veth 'uplink' with an address and a static route, its peer in a namespace (up or down)."""
    ns = netlab.netns()
    up, peer = netlab.veth(ns)
    if not peer_up:
        host.run_ip("link", "set", peer, "down", netns=ns)
    lan = ipaddress.IPv4Network(netlab.subnet())
    far = ipaddress.IPv4Network(netlab.subnet())
    host.run_ip("addr", "add", f"{lan.network_address + 2}/24", "dev", up)
    host.run_ip("addr", "add", f"{lan.network_address + 1}/24", "dev", peer, netns=ns)
    host.run_ip("route", "add", str(far), "via", str(lan.network_address + 1), "dev", up)
    return up, ns, lan, far


@pytest.mark.guest
def test_bridge_without_uplink_touches_no_host_interface(netlab) -> None:
    br = netlab.ifname("kb")
    before = _snapshot({br})
    rec = host.create_bridge(br)
    assert rec["uplink"] is None and host.is_bridge(host.link(br)) and "UP" in host.link(br)["flags"]
    assert host.load_record(br)["bridge"] == br
    assert _snapshot({br}) == before
    with pytest.raises(Conflict, match="already exists"):
        host.create_bridge(br)
    assert host.delete_bridge(br)["deleted"]
    assert host.link(br) is None and host.load_record(br) is None and _snapshot({br}) == before


@pytest.mark.guest
def test_uplink_addresses_and_routes_move_to_the_bridge_and_back(netlab) -> None:
    up, ns, lan, far = _uplink(netlab)
    host.run_ip("-6", "addr", "add", "fd13:213::2/64", "dev", up, "nodad")
    mac = host.link(up)["address"]
    br = netlab.ifname("kb")
    rec = host.create_bridge(br, uplink=up)
    assert host.link(up)["master"] == br and host.link(br)["address"] == mac
    assert _inet(up) == [] and _inet(br) == [f"{lan.network_address + 2}/24"]
    assert "fd13:213::2" in [a["local"] for a in host.addresses(br)]
    assert [r.get("gateway") for r in host.routes(br) if r["dst"] == str(far)] == [str(lan.network_address + 1)]
    assert [r["dst"] for r in rec["routes"]] == [str(far)]
    # traffic flows through the bridge to the namespace on the far side of the uplink
    ping = host.run_ip("netns", "exec", ns, "/bin/busybox", "ping", "-c", "1", "-W", "3",
                       str(lan.network_address + 2))
    assert "1 packets received" in ping
    with pytest.raises(Conflict, match="already a port"):
        host.create_bridge(netlab.ifname("kb"), uplink=up)

    done = host.delete_bridge(br)
    assert done["deleted"] and host.link(br) is None and not host.link(up).get("master")
    assert _inet(up) == [f"{lan.network_address + 2}/24"]
    assert "fd13:213::2" in [a["local"] for a in host.addresses(up)]
    assert [r.get("gateway") for r in host.routes(up) if r["dst"] == str(far)] == [str(lan.network_address + 1)]


@pytest.mark.guest
def test_rollback_when_the_bridge_does_not_come_up(netlab) -> None:
    up, _ns, lan, far = _uplink(netlab, peer_up=False)  # no carrier: the bridge cannot come up
    before = _snapshot(set())
    uplink_routes = host.routes(up)
    br = netlab.ifname("kb")
    with pytest.raises(OperationFailed, match=f"bridge '{br}' did not come up.*'{up}' was restored"):
        host.create_bridge(br, uplink=up, up_timeout=2)
    assert host.link(br) is None and host.load_record(br) is None
    assert not host.link(up).get("master")
    assert _inet(up) == [f"{lan.network_address + 2}/24"]
    assert [r["dst"] for r in host.routes(up) if r["dst"] == str(far)] == [str(far)]
    assert _snapshot(set()) == before
    assert sorted(map(str, host.routes(up))) == sorted(map(str, uplink_routes))


@pytest.mark.guest
def test_refusals_name_the_problem(netlab) -> None:
    foreign = netlab.ifname("kb")
    host.run_ip("link", "add", foreign, "type", "bridge")
    with pytest.raises(NotFound, match=f"kvmkit did not create bridge '{foreign}'"):
        host.delete_bridge(foreign)
    assert host.link(foreign) is not None
    with pytest.raises(NotFound, match="uplink interface 'kvnosuch0' does not exist"):
        host.create_bridge(netlab.ifname("kb"), uplink="kvnosuch0")
    with pytest.raises(InvalidInput, match="cannot be an uplink"):
        host.create_bridge(netlab.ifname("kb"), uplink=foreign)
    with pytest.raises(InvalidInput, match="bridge name"):
        host.create_bridge("this-name-is-too-long")
    br = netlab.ifname("kb")
    host.create_bridge(br)
    _a, _b = netlab.veth()
    host.run_ip("link", "set", _a, "master", br)
    with pytest.raises(Conflict, match=f"still has ports: {_a}"):
        host.delete_bridge(br)
    assert host.link(br) is not None


def _in_ns(ns: str, workdir, code: str) -> dict:
    """Run kvmkit code in network namespace ``ns`` (so even its default route can be moved safely)."""
    env = dict(os.environ, KVMKIT_DATA_DIR=str(workdir / f"data-{ns}"))
    res = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c",
                          f"import json; from kvmkit.host import bridges as b; print(json.dumps({code}))"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.guest
def test_default_route_moves_with_the_uplink_and_comes_back(netlab, workdir) -> None:
    """Inside a namespace standing in for a host whose only uplink carries the default route."""
    box, lan_ns = netlab.netns(), netlab.netns()
    up, peer = netlab.veth(lan_ns)
    host.run_ip("link", "set", up, "netns", box)
    lan = ipaddress.IPv4Network(netlab.subnet())
    gw, me = str(lan.network_address + 1), f"{lan.network_address + 2}/24"
    host.run_ip("addr", "add", f"{gw}/24", "dev", peer, netns=lan_ns)
    host.run_ip("link", "set", up, "up", netns=box)
    host.run_ip("addr", "add", me, "dev", up, netns=box)
    host.run_ip("route", "add", "default", "via", gw, "dev", up, netns=box)
    br = netlab.ifname("kb")

    rec = _in_ns(box, workdir, f"b.create_bridge({br!r}, uplink={up!r})")
    assert [r["dst"] for r in rec["routes"]] == ["default"]
    routes = host.ip_json("route", "show", "default", netns=box)
    assert [(r["dev"], r["gateway"]) for r in routes] == [(br, gw)]
    via = host.ip_json("route", "get", "198.51.100.7", netns=box)  # anything off-LAN leaves through the bridge
    assert [(r["dev"], r["gateway"]) for r in via] == [(br, gw)]
    reach = host.run_ip("netns", "exec", box, "/bin/busybox", "ping", "-c", "1", "-W", "3", gw)
    assert "1 packets received" in reach

    done = _in_ns(box, workdir, f"b.delete_bridge({br!r})")
    assert done["deleted"] and done["restored_addresses"] == [me]
    routes = host.ip_json("route", "show", "default", netns=box)
    assert [(r["dev"], r["gateway"]) for r in routes] == [(up, gw)]
    assert [(a["local"], a["prefixlen"]) for i in host.ip_json("addr", "show", "dev", up, netns=box)
            for a in i["addr_info"] if a["family"] == "inet"] == [(str(lan.network_address + 2), 24)]
