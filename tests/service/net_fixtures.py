"""Fixtures for network tests: kvmkit networks on random free subnets, host links/namespaces/DHCP servers,
and running shell commands in a micro-guest through libvirt's console stream.

Import with ``from tests.service.net_fixtures import *``. Everything made here is removed afterwards,
also when the test failed: VMs of the test's prefix are destroyed first, then networks (and the bridges
kvmkit created for them), DHCP servers, namespaces and links.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from kvmkit.host import bridges as host
from kvmkit.service.net import networks
from kvmkit.spec.network import NetworkSpec

__all__ = ["NetLab", "guest_run", "netlab", "random_mac"]

BUSYBOX = "/bin/busybox"


def random_mac() -> str:
    return "52:54:00:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(3))


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30)


class NetLab:
    """Creates networks and host objects for one test and tracks them for clean-up."""

    def __init__(self, conn: libvirt.virConnect, prefix: str, workdir: Path) -> None:
        self.conn = conn
        self.prefix = prefix
        self.workdir = workdir
        self.networks: list[str] = []
        self.links: list[str] = []
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    # -------------------------------------------------------- names and subnets

    def ifname(self, kind: str = "kb") -> str:
        """A fresh host interface name (max 15 chars), e.g. kb1a2b3c; tracked for clean-up."""
        name = f"{kind}{secrets.token_hex(3)}"
        self.links.append(name)
        return name

    def subnet(self) -> str:
        """A random free /24, never one this lab handed out already (it may not be in use on the host yet)."""
        given = self.__dict__.setdefault("_subnets", set())
        while (sub := networks.random_free_subnet(self.conn)) in given:
            pass
        given.add(sub)
        return sub

    # -------------------------------------------------------- kvmkit networks

    def network(self, suffix: str, **fields: Any) -> dict[str, Any]:
        """Create (and start) network ``<prefix><suffix>`` through kvmkit; nat on a random free /24 by default."""
        create_bridge = fields.pop("create_bridge", False)
        uplink = fields.pop("uplink", None)
        fields.setdefault("mode", "nat")
        if fields["mode"] != "bridge":
            fields.setdefault("subnet", self.subnet())
        spec = NetworkSpec(name=f"{self.prefix}{suffix}", **fields)
        self.networks.append(spec.name)
        return networks.create_network(self.conn, spec, create_bridge=create_bridge, uplink=uplink)

    # -------------------------------------------------------- host objects

    def netns(self) -> str:
        name = f"kn{secrets.token_hex(3)}"
        res = _run("ip", "netns", "add", name)
        assert res.returncode == 0, res.stderr
        self.namespaces.append(name)
        return name

    def veth(self, peer_netns: str | None = None, *, up: bool = True) -> tuple[str, str]:
        """A veth pair (host end, peer end); the peer optionally moved into ``peer_netns``."""
        a, b = self.ifname("kv"), self.ifname("kp")
        host.run_ip("link", "add", a, "type", "veth", "peer", "name", b)
        if peer_netns:
            host.run_ip("link", "set", b, "netns", peer_netns)
        if up:
            host.run_ip("link", "set", a, "up")
            host.run_ip("link", "set", b, "up", netns=peer_netns)
        return a, b

    def udhcpd(self, netns: str, iface: str, subnet: str, *, first: int = 100, last: int = 150) -> str:
        """Run busybox udhcpd in ``netns`` on ``iface`` (which gets the subnet's first address); returns it."""
        net = ipaddress.IPv4Network(subnet)
        server = str(net.network_address + 1)
        host.run_ip("addr", "add", f"{server}/{net.prefixlen}", "dev", iface, netns=netns)
        host.run_ip("link", "set", "lo", "up", netns=netns)
        leases = self.workdir / f"udhcpd-{netns}.leases"
        leases.touch()
        conf = self.workdir / f"udhcpd-{netns}.conf"
        conf.write_text(
            f"start {net.network_address + first}\nend {net.network_address + last}\ninterface {iface}\n"
            f"lease_file {leases}\npidfile {self.workdir / f'udhcpd-{netns}.pid'}\n"
            f"option subnet {net.netmask}\noption router {server}\noption lease 600\n")
        proc = subprocess.Popen(["ip", "netns", "exec", netns, BUSYBOX, "udhcpd", "-f", str(conf)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        pidfile = self.workdir / f"udhcpd-{netns}.pid"
        deadline = time.monotonic() + 60  # a guard: udhcpd writes its pid file once it has read the config
        while not pidfile.exists():
            assert proc.poll() is None, "udhcpd exited at once"
            assert time.monotonic() < deadline, "udhcpd never wrote its pid file"
            time.sleep(0.05)
        assert proc.poll() is None, "udhcpd exited at once"
        return server

    # -------------------------------------------------------- clean-up

    def cleanup(self) -> None:
        for dom in self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            if dom.name().startswith(self.prefix):
                with contextlib.suppress(libvirt.libvirtError):
                    dom.destroy()
        for name in self.networks:
            try:
                networks.delete(self.conn, name)
            except Exception:
                with contextlib.suppress(libvirt.libvirtError):
                    net = self.conn.networkLookupByName(name)
                    if net.isActive():
                        net.destroy()
                    net.undefine()
        for proc in self.procs:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()
        for ns in self.namespaces:
            _run("ip", "netns", "del", ns)
        for name in self.links:
            if host.link(name) is not None:
                _run("ip", "link", "del", name)
            (host.records_dir() / f"{name}.json").unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """Anything of this lab still on the host (used by tests to prove the clean-up)."""
        left = [n for n in self.links if host.link(n) is not None]
        ns = _run("ip", "-j", "netns", "list").stdout
        left += [n for n in self.namespaces if f'"{n}"' in ns]
        left += [n.name() for n in self.conn.listAllNetworks() if n.name() in self.networks]
        return left


@pytest.fixture()
def netlab(conn: libvirt.virConnect, prefix: str, workdir: Path) -> Iterator[NetLab]:
    lab = NetLab(conn, prefix, workdir)
    try:
        yield lab
    finally:
        lab.cleanup()
        assert not lab.leftovers(), f"left behind: {lab.leftovers()}"


def guest_run(conn: libvirt.virConnect, guest: Any, command: str, *, timeout: float = 60.0) -> tuple[int, str]:
    """Run ``command`` in the micro-guest's serial-console shell; return (exit status, output).

    Types the command through libvirt's console stream and reads the answer from the serial log. The
    end marker is printed as ``KVMKIT-RC-<tag>`` while the typed line reads ``KVMKIT-RC""-<tag>``, so the
    echo of the command never matches.
    """
    tag = secrets.token_hex(4)
    rx = re.compile(rf"KVMKIT-RC-{tag} (\d+)")
    line = f"{command}; echo KVMKIT-RC\"\"-{tag} $?\n".encode()
    start = guest.log.offset()
    deadline = time.monotonic() + timeout
    while True:
        stream = conn.newStream(0)
        try:
            guest.dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            stream.send(b"\n" + line)
            resend = time.monotonic() + 15  # the shell may not be listening yet: type it again later
            while time.monotonic() < min(resend, deadline):
                match = rx.search(guest.log.text(), start)
                if match:
                    return int(match[1]), guest.log.text()[start:match.start()]
                time.sleep(0.3)
        finally:  # keep the stream open until the answer is there: closing it early can drop the input
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no answer to {command!r} from {guest.name} in {timeout:.0f} s; "
                               f"log tail:\n{guest.log.text()[-1500:]}")
