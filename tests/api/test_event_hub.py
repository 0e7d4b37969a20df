"""EventHub on libvirt's test:///default driver: lifecycle events reach subscribers (fast, in-process)."""

from __future__ import annotations

import threading
import time

import pytest
from lxml import etree

from kvmkit.hypervisor.connection import connect
from kvmkit.service.tasks.events import EventHub

pytestmark = pytest.mark.fast


def _xml(name: str) -> str:
    dom = etree.Element("domain", type="test")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type").text = "hvm"
    return etree.tostring(dom, encoding="unicode")


def test_lifecycle_events_fan_out_to_subscribers(prefix: str) -> None:
    hub = EventHub("test:///default")
    got: list[dict] = []
    lock = threading.Lock()

    def sub(ev: dict) -> None:
        with lock:
            got.append(ev)

    sid = hub.subscribe(sub)
    hub.start()
    try:
        deadline = time.monotonic() + 60  # guards: the hub connects and events arrive in milliseconds
        while not hub.connected:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        conn = connect("test:///default")
        name = f"{prefix}hub"
        dom = conn.defineXML(_xml(name))
        dom.create()
        dom.destroy()
        dom.undefine()
        want = ["defined", "started", "stopped", "undefined"]
        deadline = time.monotonic() + 60
        while True:
            with lock:
                seen = [e["event"] for e in got if e.get("type") == "vm" and e.get("vm") == name]
            if seen == want:
                break
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        assert any(e.get("type") == "host" and e.get("event") == "connected" for e in got)
        hub.unsubscribe(sid)
        later: list[dict] = []
        hub.subscribe(later.append)  # still subscribed: once it has the events, they were dispatched
        conn.defineXML(_xml(name + "2")).undefine()
        deadline = time.monotonic() + 60
        while not [e for e in later if e.get("vm") == name + "2" and e.get("event") == "undefined"]:
            assert time.monotonic() < deadline, later
            time.sleep(0.05)
        assert not [e for e in got if e.get("vm") == name + "2"]
        conn.close()
    finally:
        hub.stop()
