"""Virtual network specs: what a network is, validated once (the XML lives in kvmkit.xml.network).

Modes: ``nat`` (guests reach out through the host), ``isolated`` (guests and host only), ``route``
(routed, no NAT), ``bridge`` (guests plug into an existing host bridge; no libvirt DHCP).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from kvmkit.spec.common import IFNAME_RE

MODES = ("nat", "isolated", "route", "bridge")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})$")
DOMAIN_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


class DhcpHost(BaseModel):
    """A static DHCP reservation: the guest with ``mac`` always gets ``ip`` (and ``name``)."""

    mac: str
    ip: str
    name: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str) -> str:
        v = v.strip().lower()
        if not MAC_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a MAC address like 52:54:00:12:34:56")
        return v

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        try:
            return str(ipaddress.IPv4Address(v.strip()))
        except ValueError as err:
            raise ValueError(f"{v!r} is not an IPv4 address") from err

    @field_validator("name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not HOSTNAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a host name (letters, digits, '-', max 63)")
        return v


class NetworkSpec(BaseModel):
    name: str
    mode: Literal["nat", "isolated", "route", "bridge"] = "nat"
    subnet: str | None = None  # e.g. 192.168.100.0/24; nat/isolated/route pick a free one when omitted
    gateway: str | None = None  # the host's address in the subnet (default: first host)
    dhcp: bool = True
    dhcp_start: str | None = None  # default: gateway + 1 (.2 on a /24)
    dhcp_end: str | None = None  # default: last host (.254 on a /24)
    dns: bool = True
    domain: str | None = None
    hosts: list[DhcpHost] = Field(default_factory=list)
    bridge: str | None = None  # bridge mode: the host bridge (default: name); else libvirt's bridge device
    forward_dev: str | None = None  # nat/route: the host interface traffic leaves through

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from kvmkit.spec.common import as_value_error, validate_name

        return as_value_error(validate_name, v, "network name")

    @field_validator("bridge", "forward_dev")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and not IFNAME_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not an interface name (1-15 letters, digits, '_', '.', '-')")
        return v

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None and not DOMAIN_RE.fullmatch(v):
            raise ValueError(f"{v!r} is not a DNS domain")
        return v

    @field_validator("subnet")
    @classmethod
    def _subnet(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            net = ipaddress.IPv4Network(v.strip(), strict=False)
        except ValueError as err:
            raise ValueError(f"{v!r} is not an IPv4 subnet like 192.168.100.0/24") from err
        if str(net) != v.strip() and "/" in v:
            raise ValueError(f"{v!r} has host bits set; did you mean {net}?")
        if net.prefixlen > 30:
            raise ValueError(f"{v!r} is too small for a network (at most /30)")
        return str(net)

    @model_validator(mode="after")
    def _consistent(self) -> NetworkSpec:
        if self.mode == "bridge":
            if self.subnet or self.hosts or self.dhcp_start or self.dhcp_end or self.forward_dev:
                raise ValueError("bridge mode takes no subnet, DHCP or forward device: the guests join the host "
                                 "bridge's LAN and get addresses from its DHCP server")
            if self.bridge is None:
                if not IFNAME_RE.fullmatch(self.name):
                    raise ValueError(f"network name '{self.name}' is not a valid bridge name; give --bridge")
                self.bridge = self.name
            return self
        if self.mode == "isolated" and self.forward_dev:
            raise ValueError("an isolated network has no forward device")
        if self.subnet is None:
            if self.hosts or self.gateway or self.dhcp_start or self.dhcp_end:
                raise ValueError("give --subnet when setting the gateway, DHCP range or host reservations")
            return self
        net = ipaddress.IPv4Network(self.subnet)
        hosts = list(_host_bounds(net))
        gw = _in_subnet(self.gateway, net, "gateway") if self.gateway else hosts[0]
        self.gateway = str(gw)
        if self.dhcp:
            start = _in_subnet(self.dhcp_start, net, "DHCP start") if self.dhcp_start else gw + 1
            end = _in_subnet(self.dhcp_end, net, "DHCP end") if self.dhcp_end else hosts[1]
            if start > end:
                raise ValueError(f"DHCP range {start}-{end} is empty (start after end)")
            if start <= gw <= end:
                raise ValueError(f"DHCP range {start}-{end} contains the gateway {gw}")
            self.dhcp_start, self.dhcp_end = str(start), str(end)
        elif self.hosts:
            raise ValueError("DHCP host reservations need DHCP (drop --no-dhcp)")
        seen_mac: set[str] = set()
        seen_ip: set[str] = set()
        for h in self.hosts:
            ip = _in_subnet(h.ip, net, f"reservation for {h.mac}")
            if ip == gw:
                raise ValueError(f"reservation {h.mac}={ip} is the gateway address")
            if h.mac in seen_mac or h.ip in seen_ip:
                raise ValueError(f"reservation {h.mac}={h.ip} repeats a MAC or an address")
            seen_mac.add(h.mac)
            seen_ip.add(h.ip)
        return self


def _host_bounds(net: ipaddress.IPv4Network) -> tuple[ipaddress.IPv4Address, ipaddress.IPv4Address]:
    return net.network_address + 1, net.broadcast_address - 1


def _in_subnet(value: str, net: ipaddress.IPv4Network, what: str) -> ipaddress.IPv4Address:
    try:
        ip = ipaddress.IPv4Address(value)
    except ValueError as err:
        raise ValueError(f"{what} '{value}' is not an IPv4 address") from err
    first, last = _host_bounds(net)
    if not first <= ip <= last:
        raise ValueError(f"{what} {ip} is not a host address of {net} ({first}-{last})")
    return ip
