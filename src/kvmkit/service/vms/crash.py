"""What happens when a VM crashes: its ``<on_crash>`` policy, and restarting it after its QEMU process died.

libvirt applies ``<on_crash>`` (destroy, restart, preserve, coredump-*) only to a *guest* crash that QEMU
reports (a guest kernel panic through a panic device). When the QEMU process itself ends — killed, out of
memory, a segfault — libvirt marks the VM ``shut off`` with reason ``crashed`` (lifecycle event ``stopped``,
detail ``failed``) and does nothing else, whatever the policy says. For an administrator who asked for
"restart on crash" both are the same outage, so kvmkit's server restarts a VM whose policy restarts
(``restart``, ``coredump-restart``, ``rename-restart``) when it sees its QEMU die (kvmkit.api.watch.crashes);
``destroy`` and ``preserve`` leave it shut off (nothing is left to preserve once QEMU is gone).
"""

from __future__ import annotations

import time
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import InvalidState
from kvmkit.hypervisor.errors import libvirt_errors, translate
from kvmkit.service.vms.domains import domain, state_key, state_of

RESTART_ACTIONS = ("restart", "coredump-restart", "rename-restart")
DEFAULT_POLICY = "destroy"  # libvirt's default for <on_crash>
ALREADY = "already running again (started by someone else first): nothing to do"


def crash_policy(dom: libvirt.virDomain) -> str:
    """The domain's ``<on_crash>`` action from its persistent definition (libvirt's default: destroy)."""
    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if dom.isPersistent() else 0
    with libvirt_errors(f"reading the definition of VM {dom.name()}"):
        root = etree.fromstring(dom.XMLDesc(flags).encode())
    return (root.findtext("on_crash") or DEFAULT_POLICY).strip()


def _wait_started(dom: libvirt.virDomain, limit: float = 120.0) -> None:
    """While someone else's start is under way libvirt says ``paused (starting up)``: wait for its end, so the
    state reported is the one the start left (running, or paused because the starter asked for it)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with libvirt_errors(f"reading the state of VM {dom.name()}"):
            state, reason = dom.state()
        if (state, reason) != (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP):
            return
        time.sleep(0.1)


def died(dom: libvirt.virDomain) -> bool:
    """True when the VM is shut off because its QEMU process ended unexpectedly."""
    with libvirt_errors(f"reading the state of VM {dom.name()}"):
        state, reason = dom.state()
    return state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED


def restart_after_crash(conn: libvirt.virConnect, name: str) -> dict[str, Any]:
    """Start ``name`` again if its QEMU died and its crash policy restarts; InvalidState saying why not."""
    dom = domain(conn, name)
    policy = crash_policy(dom)
    if policy not in RESTART_ACTIONS:
        raise InvalidState(f"VM {name} is not restarted after a crash: its on_crash policy is {policy}",
                           hint=f"start it with `kvmkit vm start {name}`; create VMs with --restart-on-crash to "
                                "have kvmkit's server restart them")
    done = {"name": name, "action": "crash-restart", "policy": policy}

    def started_by_another() -> dict[str, Any]:  # another server watching this host, or a user, was first
        _wait_started(dom)
        return {**done, "state": state_key(dom), "note": ALREADY}

    if not died(dom):
        if dom.isActive():
            return started_by_another()
        raise InvalidState(f"VM {name} is {state_of(dom)}, not shut off after a crash: nothing to restart")
    try:
        dom.create()
    except libvirt.libvirtError as err:
        if not dom.isActive():
            raise translate(err, f"restarting VM {name} after its QEMU process ended") from err
        return started_by_another()  # started in the meantime: its create() came first
    return {**done, "state": state_key(dom)}
