"""/api/v1/networks: virtual networks — ``kvmkit net ...``. Viewers read (not delegated users); admins
create (every mode: nat, isolated, route, bridge), start, stop, set autostart, delete, and change static DHCP
reservations (live and persistent).

Bad input answers before anything is made: a subnet overlapping another libvirt network, a host address or
a host route is 409 naming what it overlaps; a spec the NetworkSpec refuses is 422 naming the field.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from kvmkit.api.deps import require, require_unrestricted, state
from kvmkit.api.driver_limits import LIMITS
from kvmkit.api.models.base import Out, json_value
from kvmkit.api.models.responses import Responses
from kvmkit.service.access.auth import Principal
from kvmkit.spec.network import DhcpHost, NetworkSpec

router = APIRouter(prefix="/networks", tags=["networks"], dependencies=[LIMITS])
NOT_FOUND: Responses = {404: {"description": "no such network"}}
CHANGE: Responses = {404: {"description": "no such network"},
                     409: {"description": "busy, in use, or in the wrong state"}}


class DhcpRange(Out):
    start: str
    end: str


class Reservation(Out):
    mac: str
    ip: str
    name: str | None = None


class Lease(Out):
    mac: str
    ip: str
    prefix: int
    type: Literal["ipv4", "ipv6"]
    hostname: str | None = None
    expiry: int = Field(description="seconds since the epoch")
    interface: str


class Network(Out):
    name: str
    uuid: str | None = None
    mode: str = Field(description="nat, isolated, route, bridge (or another libvirt forward mode)")
    bridge: str | None = None
    forward_dev: str | None = None
    domain: str | None = None
    dns: bool
    subnets: list[str]
    subnet: str | None = None
    gateway: str | None = None
    dhcp_range: DhcpRange | None = None
    hosts: list[Reservation] = Field(description="static DHCP reservations")
    active: bool
    autostart: bool
    persistent: bool
    kvmkit_bridge: bool = Field(False, description="bridge mode: kvmkit created the host bridge (and removes it "
                                                   "with the network)")
    uplink: str | None = None


class NetworkDetail(Network):
    vms: list[str] = Field(description="VMs with a NIC on it")
    running_vms: list[str]
    leases: list[Lease] | None = Field(None, description="null: this libvirt driver cannot report leases")
    xml: str


class BridgeCreated(Out):
    bridge: str
    created: str
    owner: str | None = None
    uplink: str | None = None
    addresses: Any = json_value("the uplink's addresses moved onto the bridge: `ip -j address` entries (family, "
                                "local, prefixlen, scope, broadcast ...); restored on delete")
    routes: Any = json_value("the uplink's routes moved onto the bridge: `ip -j route` entries (dst, gateway, "
                             "protocol, metric, prefsrc, scope ...)")
    warnings: list[str] = Field(default_factory=list)


class NetworkCreated(Network):
    bridge_created: BridgeCreated | None = None


class BridgeDeleted(Out):
    bridge: str
    deleted: bool
    uplink: str | None = None
    warnings: list[str] = Field(default_factory=list)
    restored_addresses: list[str] = Field(default_factory=list)
    note: str | None = None


class NetworkDeleted(Out):
    name: str
    deleted: bool
    bridge_deleted: BridgeDeleted | None = None


class CreateNetwork(NetworkSpec):
    """A network spec (kvmkit.spec.network.NetworkSpec, what `kvmkit net create` builds from its flags) plus
    what to do with it."""

    start: bool = Field(True, description="start it once defined (`--no-start`: false)")
    autostart: bool = Field(False, description="start it with the host")
    create_bridge: bool = Field(False, description="bridge mode: create the host bridge")
    uplink: str | None = Field(None, description="with create_bridge: enslave this host interface, moving its "
                                                 "addresses and routes to the bridge")


class NetworkAutostart(BaseModel):
    autostart: bool


@router.get("")
def list_networks(request: Request, p: Principal = Depends(require("viewer"))) -> list[Network]:
    from kvmkit.service.net import networks
    require_unrestricted(p, "list networks")
    return [Network.model_validate(n) for n in networks.list_networks(state(request).hv.get())]


@router.post("", status_code=201, responses={409: {"description": "exists, or its subnet or bridge is taken"},
                                             422: {"description": "an invalid spec"}})
def create_network(body: CreateNetwork, request: Request, _p: Principal = Depends(require("admin"))) -> NetworkCreated:
    """Create a network in any mode (``kvmkit net create``); a free subnet is chosen when none is given."""
    from kvmkit.service.net import networks

    spec = NetworkSpec.model_validate(body.model_dump(exclude={"start", "autostart", "create_bridge", "uplink"}))
    st = state(request)
    with st.runner.hold(f"net:{spec.name}", "net.create"):
        out = networks.create_network(st.hv.get(), spec, start=body.start, autostart=body.autostart,
                                      create_bridge=body.create_bridge, uplink=body.uplink)
    return NetworkCreated.model_validate(out)


@router.get("/{name}", responses=NOT_FOUND)
def show_network(name: str, request: Request, p: Principal = Depends(require("viewer"))) -> NetworkDetail:
    """A network with its reservations, the VMs using it, its leases and its XML (``kvmkit net show``)."""
    from kvmkit.service.net import networks
    require_unrestricted(p, "read networks")
    return NetworkDetail.model_validate(networks.show_network(state(request).hv.get(), name))


@router.post("/{name}/actions/{action}", responses=CHANGE)
def network_action(name: str, action: Literal["start", "stop"], request: Request,
                   force: bool = Query(False, description="stop: even while running VMs use it (cuts them off)"),
                   _p: Principal = Depends(require("admin"))) -> Network:
    from kvmkit.service.net import networks
    st = state(request)
    conn = st.hv.get()
    with st.runner.hold(f"net:{name}", f"net.{action}"):
        out = networks.start(conn, name) if action == "start" else networks.stop(conn, name, force=force)
    return Network.model_validate(out)


@router.patch("/{name}", responses=CHANGE)
def set_autostart(name: str, body: NetworkAutostart, request: Request,
                  _p: Principal = Depends(require("admin"))) -> Network:
    """Start the network with the host, or not (``kvmkit net autostart NAME [--off]``)."""
    from kvmkit.service.net import networks
    st = state(request)
    with st.runner.hold(f"net:{name}", "net.autostart"):
        return Network.model_validate(networks.set_autostart(st.hv.get(), name, body.autostart))


@router.delete("/{name}", responses=CHANGE)
def delete_network(name: str, request: Request, _p: Principal = Depends(require("admin"))) -> NetworkDeleted:
    """Stop and remove a network (refused while running VMs use it); removes a host bridge kvmkit made for it."""
    from kvmkit.service.net import networks
    st = state(request)
    with st.runner.hold(f"net:{name}", "net.delete"):
        return NetworkDeleted.model_validate(networks.delete(st.hv.get(), name))


@router.get("/{name}/leases", responses={**NOT_FOUND, 409: {"description": "the network is not running"}})
def leases(name: str, request: Request, mac: str | None = Query(None, description="only this MAC"),
           p: Principal = Depends(require("viewer"))) -> list[Lease]:
    """The DHCP leases the network handed out (``kvmkit net leases``)."""
    from kvmkit.service.net import networks
    require_unrestricted(p, "read networks")
    return [Lease.model_validate(row) for row in networks.leases(state(request).hv.get(), name, mac)]


@router.post("/{name}/reservations", status_code=201, responses=CHANGE)
def add_reservation(name: str, body: DhcpHost, request: Request,
                    _p: Principal = Depends(require("admin"))) -> Network:
    """Reserve an address for a MAC, live and persistent (``kvmkit net host add``)."""
    from kvmkit.service.net import networks
    st = state(request)
    with st.runner.hold(f"net:{name}", "net.reservation"):
        return Network.model_validate(networks.add_host(st.hv.get(), name, body))


@router.delete("/{name}/reservations/{mac}", responses=CHANGE)
def remove_reservation(name: str, mac: str, request: Request, _p: Principal = Depends(require("admin"))) -> Network:
    """Drop the reservation of a MAC (``kvmkit net host remove``)."""
    from kvmkit.service.net import networks
    st = state(request)
    with st.runner.hold(f"net:{name}", "net.reservation"):
        return Network.model_validate(networks.remove_host(st.hv.get(), name, mac))
