"""Networks through the API only, against a real `kvmkit serve` on qemu:///system: a NAT network with a static
reservation, a micro-guest on it that gets the reserved address (its serial log says KVMKIT-IP, the network's
leases say so too), reservations added and removed live, stop/delete refused while a VM runs, every mode
(nat, isolated, route, bridge with a bridge kvmkit creates and removes), overlap and bad specs answered 4xx
naming the problem, admins only for changes."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator

import httpx
import pytest

from kvmkit.host import bridges
from kvmkit.service.net.networks import random_free_subnet
from tests.api.guest_http import create_micro, deleting, wait_console
from tests.api.server import Server

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    server = Server("sqlite")
    server.cli("user", "add", "admin", "--role", "admin")
    server.start()
    yield server
    server.cleanup()


@pytest.fixture()
def api(srv: Server) -> Iterator[httpx.Client]:
    with srv.client(srv.token("admin")) as client:
        yield client


def _mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _host(subnet: str, n: int) -> str:
    return str(ipaddress.IPv4Network(subnet).network_address + n)


def test_nat_network_reservation_and_the_vms_lease(srv: Server, api: httpx.Client, prefix: str, conn,
                                                   micro_image) -> None:
    net, vm = f"{prefix}nat", f"{prefix}guest"
    subnet = random_free_subnet(conn)
    mac, ip = _mac(), _host(subnet, 10)
    r = api.post("/api/v1/networks", json={"name": net, "mode": "nat", "subnet": subnet,
                                           "hosts": [{"mac": mac, "ip": ip, "name": "micro"}]})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["active"] and created["mode"] == "nat" and created["subnet"] == subnet
    assert created["hosts"] == [{"mac": mac, "ip": ip, "name": "micro"}]

    # overlapping another network: 409 naming it; an invalid spec: 422 naming the field
    r = api.post("/api/v1/networks", json={"name": f"{prefix}dup", "subnet": str(ipaddress.IPv4Network(subnet)
                                                                                   .subnets(1).__next__())})
    assert r.status_code == 409 and f"libvirt network '{net}'" in r.json()["error"], r.text
    r = api.post("/api/v1/networks", json={"name": f"{prefix}bad", "mode": "bridge", "subnet": subnet})
    assert r.status_code == 422 and "bridge mode takes no subnet" in r.text
    r = api.post("/api/v1/networks", json={"name": f"{prefix}bad", "subnet": "10.0.0.1/24"})
    assert r.status_code == 422 and "host bits set" in r.text
    assert api.get(f"/api/v1/networks/{prefix}dup").status_code == 404

    with deleting(api, vm):
        create_micro(api, vm, nics=[{"source": net, "mac": mac}])
        wait_console(api, vm, rf"KVMKIT-IP {ip.replace('.', '[.]')}\b")
        leases = api.get(f"/api/v1/networks/{net}/leases").json()
        assert [(lease["mac"], lease["ip"]) for lease in leases] == [(mac, ip)]
        assert api.get(f"/api/v1/networks/{net}/leases", params={"mac": mac}).json()[0]["ip"] == ip
        shown = api.get(f"/api/v1/networks/{net}").json()
        assert shown["vms"] == [vm] and shown["running_vms"] == [vm] and shown["leases"][0]["ip"] == ip
        assert f"<host mac='{mac}'" in shown["xml"]

        # reservations change live (and persistently)
        mac2, ip2 = _mac(), _host(subnet, 11)
        r = api.post(f"/api/v1/networks/{net}/reservations", json={"mac": mac2, "ip": ip2})
        assert r.status_code == 201 and {h["mac"] for h in r.json()["hosts"]} == {mac, mac2}
        r = api.post(f"/api/v1/networks/{net}/reservations", json={"mac": mac2, "ip": _host(subnet, 12)})
        assert r.status_code == 409 and "already reserves" in r.json()["error"]
        r = api.post(f"/api/v1/networks/{net}/reservations", json={"mac": _mac(), "ip": "192.0.2.1"})
        assert r.status_code == 422 and "outside network" in r.json()["error"]
        r = api.delete(f"/api/v1/networks/{net}/reservations/{mac2}")
        assert r.status_code == 200 and [h["mac"] for h in r.json()["hosts"]] == [mac]
        assert api.delete(f"/api/v1/networks/{net}/reservations/{mac2}").status_code == 404

        # a running VM uses it: stop and delete refused, naming the VM
        r = api.post(f"/api/v1/networks/{net}/actions/stop")
        assert r.status_code == 409 and vm in r.json()["error"]
        r = api.delete(f"/api/v1/networks/{net}")
        assert r.status_code == 409 and vm in r.json()["error"]
        assert api.patch(f"/api/v1/networks/{net}", json={"autostart": True}).json()["autostart"] is True
        assert api.patch(f"/api/v1/networks/{net}", json={"autostart": False}).json()["autostart"] is False
    r = api.post(f"/api/v1/networks/{net}/actions/stop")
    assert r.status_code == 200 and r.json()["active"] is False
    r = api.get(f"/api/v1/networks/{net}/leases")
    assert r.status_code == 409 and "not running" in r.json()["error"]
    assert api.post(f"/api/v1/networks/{net}/actions/start").json()["active"] is True
    r = api.delete(f"/api/v1/networks/{net}")
    assert r.status_code == 200 and r.json()["deleted"], r.text
    assert api.get(f"/api/v1/networks/{net}").status_code == 404


@pytest.fixture()
def bridge_name() -> Iterator[str]:
    """A fresh host bridge name, removed afterwards if a failed test left it."""
    name = f"kb{secrets.token_hex(3)}"
    yield name
    if bridges.link(name) is not None:
        bridges.run_ip("link", "del", name, force=True)
    (bridges.records_dir() / f"{name}.json").unlink(missing_ok=True)


def test_every_mode_and_admin_only(srv: Server, api: httpx.Client, prefix: str, conn, bridge_name: str) -> None:
    made = []
    for mode in ("isolated", "route", "nat"):
        body = {"name": f"{prefix}{mode}", "mode": mode, "subnet": random_free_subnet(conn), "start": False}
        if mode == "nat":
            body.pop("subnet")  # a free subnet is chosen
            body["start"] = True
        r = api.post("/api/v1/networks", json=body)
        assert r.status_code == 201, r.text
        made.append(r.json())
    assert [(n["mode"], n["active"]) for n in made] == [("isolated", False), ("route", False), ("nat", True)]
    assert made[2]["subnet"]
    r = api.post("/api/v1/networks", json={"name": f"{prefix}br", "mode": "bridge", "bridge": bridge_name,
                                           "create_bridge": True})
    assert r.status_code == 201, r.text
    assert r.json()["kvmkit_bridge"] and r.json()["bridge_created"]["bridge"] == bridge_name
    assert bridges.is_bridge(bridges.link(bridge_name))
    r = api.post("/api/v1/networks", json={"name": f"{prefix}br2", "mode": "bridge", "bridge": bridge_name})
    assert r.status_code == 409 and "already used by network" in r.json()["error"]
    listed = {n["name"] for n in api.get("/api/v1/networks").json()}
    assert {n["name"] for n in made} | {f"{prefix}br"} <= listed

    for role in ("operator", "viewer"):
        name = f"{prefix}{role[:2]}"
        assert api.post("/api/v1/users", json={"name": name, "role": role, "password": "pass-" + name}).status_code \
            == 201
        with srv.client(api.post("/api/v1/tokens", json={"name": "t", "user": name}).json()["token"]) as c:
            assert c.get(f"/api/v1/networks/{prefix}nat").status_code == 200
            assert c.post("/api/v1/networks", json={"name": f"{prefix}no"}).status_code == 403
            assert c.delete(f"/api/v1/networks/{prefix}nat").status_code == 403
            assert c.patch(f"/api/v1/networks/{prefix}nat", json={"autostart": True}).status_code == 403
            assert c.post(f"/api/v1/networks/{prefix}nat/reservations",
                          json={"mac": _mac(), "ip": "10.0.0.5"}).status_code == 403

    r = api.delete(f"/api/v1/networks/{prefix}br")
    assert r.status_code == 200 and r.json()["bridge_deleted"]["deleted"], r.text
    assert bridges.link(bridge_name) is None
    for n in made:
        assert api.delete(f"/api/v1/networks/{n['name']}").status_code == 200
