"""A VM's graphical console: a connected socket to its VNC server, and remote-viewer files for SPICE.

VNC (the browser console, docs/console.md): QEMU's VNC server listens on loopback with a per-VM password
(``vm create --graphics vnc``); :func:`open_vnc` asks libvirt for a socket already connected to it on which
authentication is skipped (``virDomainOpenGraphicsFD`` with ``VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH``: QEMU's
``add_client`` with ``skipauth``). The password never leaves QEMU; whoever holds the socket is trusted, so
only the console relay, after its own checks, gets one. This needs a local libvirt connection (file
descriptors cross libvirt's UNIX socket, not SSH or TCP).

SPICE (a native client): :func:`spice_file` writes remote-viewer's ``.vv`` file. Its password is a fresh
random one set on the running VM for this file alone, valid for new connections for :data:`SPICE_TICKET_S`
seconds (libvirt ``passwdValidTo``, ``connected='keep'``: open sessions stay), like oVirt's console tickets:
a file that leaks later opens nothing, and a user whose grant is removed keeps no password. The VM's
configured password stays in its definition (it is back after the next boot). A newer file replaces the
ticket of an older one not used yet.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import HostError, InvalidState
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.vms.domains import domain

SPICE_TICKET_S = 120
LOCAL_URIS = ("qemu:///system", "qemu:///session", "qemu:///embed")


class NoDisplay(InvalidState):
    """The VM has no display of the kind asked for."""

    code = "no_display"


def _live_root(dom: libvirt.virDomain) -> etree._Element:
    with libvirt_errors(f"reading the definition of VM {dom.name()}"):
        return etree.fromstring(dom.XMLDesc(0).encode())


def displays(root: etree._Element) -> list[dict[str, Any]]:
    """The domain's <graphics> elements in order (libvirt's index for OpenGraphicsFD): type, listen, ports."""
    out = []
    for index, el in enumerate(root.findall("devices/graphics")):
        listen_el = el.find("listen[@type='address']")
        listen = el.get("listen") or (listen_el.get("address") if listen_el is not None else None)
        port, tls = el.get("port"), el.get("tlsPort")
        out.append({"index": index, "type": el.get("type"), "listen": listen,
                    "port": int(port) if port and port.isdigit() and int(port) > 0 else None,
                    "tls_port": int(tls) if tls and tls.isdigit() and int(tls) > 0 else None})
    return out


def _display(root: etree._Element, name: str, kind: str) -> dict[str, Any]:
    found = [d for d in displays(root) if d["type"] == kind]
    if not found:
        others = sorted({str(d["type"]) for d in displays(root)})
        have = f"it has {' and '.join(others)}" if others else "it has no graphical display"
        if kind == "vnc":
            hint = ("SPICE displays open in remote-viewer: GET /api/v1/vms/NAME/console/spice.vv or kvmkit vm "
                    f"console {name} --spice-file FILE" if "spice" in others else
                    f"create VMs with --graphics vnc, or add <graphics type='vnc'/> with kvmkit vm xml {name} "
                    "--replace FILE; the serial console works without one")
        else:
            hint = (f"create it with --graphics spice, or add <graphics type='spice'/> (kvmkit vm xml {name} "
                    "--replace FILE)")
        raise NoDisplay(f"VM {name} has no {kind.upper()} display ({have})", hint=hint)
    return found[0]


def _running(dom: libvirt.virDomain, name: str, what: str) -> None:
    with libvirt_errors(f"reading the state of VM {name}"):
        active = dom.isActive()
    if not active:
        raise InvalidState(f"VM {name} is not running: its {what} exists only while it runs",
                           hint=f"start it: kvmkit vm start {name}")


def open_vnc(conn: libvirt.virConnect, name: str) -> socket.socket:
    """A socket connected to the VM's VNC server, authentication skipped (the caller's checks are the
    authentication). InvalidState when the VM is not running, NoDisplay without a VNC display."""
    dom = domain(conn, name)
    index = _display(_live_root(dom), name, "vnc")["index"]  # first: a VM without one has none when it runs
    _running(dom, name, "VNC display")
    if conn.getURI().split("?")[0] not in LOCAL_URIS:
        raise HostError(f"the graphical console of VM {name} needs a local libvirt connection",
                        hint="libvirt passes the display's socket only over its local UNIX socket; run kvmkit serve "
                             "on the VM's host")
    with libvirt_errors(f"opening the VNC display of VM {name}"):
        fd = dom.openGraphicsFD(index, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
    return socket.socket(fileno=fd)


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _is_any(address: str | None) -> bool:
    try:
        return address is None or ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


def spice_file(conn: libvirt.virConnect, name: str, *, server_host: str | None = None,
               valid_s: int = SPICE_TICKET_S) -> dict[str, Any]:
    """Set a fresh SPICE password (valid ``valid_s`` s for new connections) and return remote-viewer's file:
    ``{"filename", "text", "host", "port", "tls_port", "tunnel", "expires_at"}``. ``server_host``: the name
    the client reaches this host by (the API's Host header), for a display listening on every address and
    for the SSH tunnel a loopback display needs. The password is in ``text`` only: never log it."""
    dom = domain(conn, name)
    _running(dom, name, "SPICE display")
    root = _live_root(dom)
    disp = _display(root, name, "spice")
    if disp["port"] is None and disp["tls_port"] is None:
        raise InvalidState(f"the SPICE display of VM {name} listens on no TCP port (a UNIX socket?)",
                           hint="remote-viewer files name a host and port; give it listen=ADDRESS")
    password = secrets.token_urlsafe(12)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=valid_s)
    el = root.findall("devices/graphics")[disp["index"]]
    el.set("passwd", password)
    el.set("passwdValidTo", expires.strftime("%Y-%m-%dT%H:%M:%S"))
    el.set("connected", "keep")
    with libvirt_errors(f"setting a SPICE ticket on VM {name}"):
        dom.updateDeviceFlags(etree.tostring(el).decode(), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    listen = disp["listen"]
    where = server_host or socket.getfqdn()
    tunnel = None
    if _is_loopback(listen):
        host = "127.0.0.1"
        ports = " ".join(f"-L {p}:127.0.0.1:{p}" for p in (disp["port"], disp["tls_port"]) if p)
        tunnel = f"ssh -N {ports} root@{where}"
    elif _is_any(listen):
        host = where
    else:
        host = str(listen)
    lines = [f"# kvmkit: the SPICE console of VM {name}; open it with remote-viewer (package virt-viewer).",
             f"# The password works for new connections until {expires.isoformat()} (then ask for a new file);",
             "# remote-viewer deletes this file once it has read it."]
    title = f"{name} (kvmkit)"
    if tunnel:
        lines += ["# The VM's display listens on the server's loopback only: first run, on this machine,",
                  f"#   {tunnel}",
                  "# and keep it open while the console is in use."]
        title = f"{name} (kvmkit, through an SSH tunnel to {where})"
    lines += ["[virt-viewer]", "type=spice", f"host={host}"]
    if disp["port"]:
        lines.append(f"port={disp['port']}")
    if disp["tls_port"]:
        lines.append(f"tls-port={disp['tls_port']}")
    lines += [f"password={password}", "delete-this-file=1", f"title={title}", "release-cursor=shift+f12",
              "toggle-fullscreen=shift+f11", "secure-attention=ctrl+alt+end"]
    return {"filename": f"{name}.vv", "text": "\n".join(lines) + "\n", "host": host, "port": disp["port"],
            "tls_port": disp["tls_port"], "tunnel": tunnel, "expires_at": expires.isoformat()}
