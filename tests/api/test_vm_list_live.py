"""GET /api/v1/vms from the server's cached list, against a real server and real libvirt: it follows
changes made straight through libvirt (not through kvmkit), shows a task's result as soon as the task shows
as finished, and gives delegated users only their VMs. How soon an outside change shows (milliseconds through
events, the age limit for changes without one) is printed here and measured in bench/ (listing); that events
alone invalidate the list is proved on the test driver with the age limit out of the way (test_vm_cache.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import libvirt
import pytest
from lxml import etree

from kvmkit.service.vms.query import list_vms
from tests.api.conftest import wait_task

pytestmark = pytest.mark.guest
FOLLOW_S = 120.0  # a guard: an outside change shows within milliseconds (events) on an idle host
SAFETY_S = 120.0  # a guard: a change libvirt sends no event for shows after the list's age limit (2 s)


def rows(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/api/v1/vms")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    return {v["name"]: v for v in r.json()}


def follow(client: httpx.Client, pred: Callable[[dict[str, dict[str, Any]]], bool], what: str,
           timeout: float = FOLLOW_S) -> float:
    """Seconds after which a request sent showed what ``pred`` wants (measured when the request was sent: on
    a loaded host one answer may itself take long); fails when a request sent after ``timeout`` does not."""
    t0 = time.monotonic()
    while True:
        sent = time.monotonic() - t0
        if pred(rows(client)):
            return sent
        if sent > timeout:
            raise AssertionError(f"GET /api/v1/vms sent {sent:.1f} s after the change did not show {what}")
        time.sleep(0.05)


def shell_domain(conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
    """A shut-off domain without devices, defined straight through libvirt."""
    dom = etree.Element("domain", type="qemu")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type", arch="x86_64", machine="pc").text = "hvm"
    return conn.defineXML(etree.tostring(dom, encoding="unicode"))


def test_the_list_follows_changes_made_straight_through_libvirt(admin: httpx.Client, conn: libvirt.virConnect,
                                                                micro_guest, prefix: str) -> None:
    rows(admin)  # the server has a list now; every change below happens behind its back
    guest = micro_guest("out", start=False, vcpus=1, max_vcpus=2)  # conn.defineXML, not kvmkit
    name, dom = guest.name, guest.dom
    took = {"define": follow(admin, lambda v: v.get(name, {}).get("state") == "shut-off", f"{name} defined")}
    listed = rows(admin)[name]
    assert listed == next(r for r in list_vms(conn, host="local") if r["name"] == name)  # vm_query's row
    dom.create()
    took["start"] = follow(admin, lambda v: v.get(name, {}).get("state") == "running", f"{name} running")
    dom.suspend()
    took["suspend"] = follow(admin, lambda v: v[name]["state"] == "paused", f"{name} paused")
    dom.resume()
    took["resume"] = follow(admin, lambda v: v[name]["state"] == "running", f"{name} running again")
    dom.destroy()
    took["destroy"] = follow(admin, lambda v: v[name]["state"] == "shut-off", f"{name} shut off")
    new = f"{prefix}renamed"
    dom.rename(new, 0)
    took["rename"] = follow(admin, lambda v: new in v and name not in v, f"{name} renamed to {new}")
    dom = conn.lookupByName(new)
    dom.setVcpusFlags(2, libvirt.VIR_DOMAIN_AFFECT_CONFIG)  # libvirt sends no event for this one
    took["vcpus (no event)"] = follow(admin, lambda v: v[new]["vcpus"] == 2, f"{new} with 2 vCPUs", SAFETY_S)
    dom.undefine()
    took["undefine"] = follow(admin, lambda v: new not in v, f"{new} gone")
    print("seen after:", {k: f"{v:.2f} s" for k, v in took.items()})


def test_a_finished_task_shows_in_the_list_at_once(admin: httpx.Client, micro_guest) -> None:
    name = micro_guest("task", start=False).name  # defined behind the server's back: shows within seconds
    follow(admin, lambda v: v.get(name, {}).get("state") == "shut-off", f"{name} defined")
    for action, state in (("start", "running"), ("suspend", "paused"), ("resume", "running"),
                          ("destroy", "shut-off")):
        r = admin.post(f"/api/v1/vms/{name}/actions/{action}")
        assert r.status_code == 202, r.text
        assert wait_task(admin, r.json()["id"], timeout=120)["state"] == "succeeded"
        assert rows(admin)[name]["state"] == state, f"after {action}"  # no waiting: the task is done
    r = admin.patch(f"/api/v1/vms/{name}", json={"memory": "128M", "config": True})
    assert r.status_code == 200, r.text
    assert rows(admin)[name]["memory_mib"] == 128


def test_a_delegated_user_sees_only_its_vms(admin: httpx.Client, make_user, conn: libvirt.virConnect,
                                            server, prefix: str) -> None:
    a, b = f"{prefix}a", f"{prefix}b"
    shell_domain(conn, a)
    shell_domain(conn, b)
    follow(admin, lambda v: a in v and b in v, "both VMs")  # the admin's (unfiltered) list has both
    name, viewer = make_user("deleg", "viewer", vm_scope="granted")
    assert rows(viewer) == {}
    assert admin.post(f"/api/v1/users/{name}/grants", json={"vm": a}).status_code == 201
    assert list(rows(viewer)) == [a]  # at once: the grant was a change request
    assert admin.post(f"/api/v1/users/{name}/grants", json={"vm": b}).status_code == 201
    assert list(rows(viewer)) == [a, b]
    assert rows(viewer)[a] == rows(admin)[a]
    assert admin.delete(f"/api/v1/users/{name}/grants/{a}").status_code == 204
    assert list(rows(viewer)) == [b]
    conn.lookupByName(b).undefine()
    follow(viewer, lambda v: v == {}, f"{b} gone for the delegated user")
    with server.client() as anon:
        assert anon.get("/api/v1/vms").status_code == 401
