"""The server's cached VM list (kvmkit.api.vm_cache) on libvirt's test driver: it is what list_vms returns;
domain events invalidate it or patch a state that is certain; rebuilds are counted and coalesced; an old list
is served while a background rebuild runs; a task body invalidates it when it ends. (The real-server tests
are in test_vm_list_live.py.)"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import libvirt
import pytest
from lxml import etree

from kvmkit.api.vm_cache import VMListCache, filtered, invalidating_runner
from kvmkit.service.tasks.events import register_event_impl
from kvmkit.service.vms.query import list_vms
from tests.support import test_driver

pytestmark = pytest.mark.fast


def shell_xml(name: str) -> str:
    dom = etree.Element("domain", type="test")
    etree.SubElement(dom, "name").text = name
    etree.SubElement(dom, "memory", unit="MiB").text = "64"
    etree.SubElement(dom, "vcpu").text = "1"
    os_el = etree.SubElement(dom, "os")
    etree.SubElement(os_el, "type").text = "hvm"
    return etree.tostring(dom, encoding="unicode")


_caches: list[VMListCache] = []


def new_cache(*args: Any, **kwargs: Any) -> VMListCache:
    """A cache closed after the test: its event callbacks would otherwise keep the test:///default connection
    (and with it the driver's per-process state, these tests' domains included) alive for later tests."""
    cache = VMListCache(*args, **kwargs)
    _caches.append(cache)
    return cache


def _close_caches() -> None:
    while _caches:
        _caches.pop().close()


@pytest.fixture()
def evconn() -> Any:
    """A test:///default connection that delivers events (the event loop is registered first)."""
    register_event_impl()
    c = libvirt.open(test_driver.URI)
    yield c
    _close_caches()  # before the connection: deregistering needs it open
    test_driver.reset(c)  # the shell domains these tests defined
    c.close()


def wait_until(pred: Any, timeout: float = 60.0) -> float:  # a guard: events arrive in milliseconds
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"not true after {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - t0


def test_the_cached_list_is_list_vms_and_its_json(evconn: Any, prefix: str) -> None:
    evconn.defineXML(shell_xml(f"{prefix}a"))
    cache = new_cache(lambda: evconn)
    rows, body = cache.current()
    assert rows == list_vms(evconn, include_inactive=True)
    assert json.loads(body) == rows
    assert any(r["name"] == f"{prefix}a" for r in rows)
    assert cache.rebuilds == 1
    assert cache.lookup(evconn) == (rows, body)  # fresh: served without a rebuild
    cache.current()
    assert cache.rebuilds == 1
    other = libvirt.open("test:///default")
    assert cache.lookup(other) is None  # another connection (after a reconnect): rebuild first
    other.close()


def test_domain_events_invalidate_or_patch_the_list(evconn: Any, prefix: str) -> None:
    cache = new_cache(lambda: evconn, max_age=3600)
    cache.observers = lambda: 1  # an event-stream client could have seen the events: they invalidate
    cache.current()
    name = f"{prefix}ev"
    dom = evconn.defineXML(shell_xml(name))  # the test driver emits the 'defined' event on this connection
    wait_until(lambda: cache.lookup(evconn) is None)
    rows, _ = cache.current()
    assert [r["state"] for r in rows if r["name"] == name] == ["shut-off"]
    builds = cache.rebuilds

    def state() -> str | None:
        snap = cache.lookup(evconn)
        return next((r["state"] for r in json.loads(snap[1]) if r["name"] == name), None) if snap else None

    for change, expect in ((dom.create, "running"), (dom.suspend, "paused"), (dom.resume, "running")):
        change()  # a certain state: the cached row is patched, no rebuild, and it matches libvirt's list
        wait_until(lambda expect=expect: state() == expect)
        assert cache.rebuilds == builds
        assert cache.cached()[0] == list_vms(evconn)
    dom.destroy()  # a stop (the domain may vanish or change resources): invalidated
    wait_until(lambda: cache.lookup(evconn) is None)
    assert [r["state"] for r in cache.current()[0] if r["name"] == name] == ["shut-off"]
    dom.undefine()
    wait_until(lambda: cache.lookup(evconn) is None)
    assert name not in [r["name"] for r in cache.current()[0]]


def test_a_state_patched_during_a_rebuild_is_kept(evconn: Any, prefix: str) -> None:
    name = f"{prefix}p"
    evconn.defineXML(shell_xml(name))

    class Racing:
        def __getattr__(self, attr: str) -> Any:
            return getattr(evconn, attr)

        def getAllDomainStats(self, *args: Any) -> Any:
            out = evconn.getAllDomainStats(*args)  # read before the event ...
            cache.on_lifecycle(name, "started")  # ... which arrives before the rebuild is stored
            return out

    racing = Racing()
    cache = new_cache(lambda: racing, max_age=3600)
    cache.observers = lambda: 1
    cache.current()  # first build: no row to patch yet, so the event invalidates
    assert cache.lookup(racing) is None
    rows, body = cache.current()  # second build: the row exists and keeps the patched state
    assert [r["state"] for r in rows if r["name"] == name] == ["running"]
    assert json.loads(body) == rows


def test_hub_events_and_explicit_invalidation(evconn: Any) -> None:
    cache = new_cache(lambda: evconn, max_age=3600)
    cache.observers = lambda: 1
    cache.current()
    for event in ({"type": "vm", "event": "started"}, {"type": "task", "task": {}}, {"type": "host"}):
        assert cache.lookup(evconn) is not None
        cache.on_hub_event(event)
        assert cache.lookup(evconn) is None
        cache.current()
    cache.on_hub_event({"type": "hello"})
    assert cache.lookup(evconn) is not None


def test_an_invalidation_during_a_rebuild_forces_another(evconn: Any) -> None:
    class Racing:
        """The connection, but an event arrives while the bulk call runs (the first time)."""

        raced = False

        def __getattr__(self, attr: str) -> Any:
            return getattr(evconn, attr)

        def getAllDomainStats(self, *args: Any) -> Any:
            if not self.raced:
                self.raced = True
                cache.invalidate()
            return evconn.getAllDomainStats(*args)

    racing = Racing()
    cache = new_cache(lambda: racing, max_age=3600)
    cache.current()
    assert cache.lookup(racing) is None  # the event came while it was being built: still stale
    cache.current()
    assert cache.lookup(racing) is not None
    assert cache.rebuilds == 2


def test_concurrent_stale_requests_share_one_rebuild(evconn: Any) -> None:
    cache = new_cache(lambda: evconn, max_age=3600)
    cache.current()
    cache.invalidate()
    before = cache.rebuilds
    threads = [threading.Thread(target=cache.current) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= cache.rebuilds - before <= 2  # waiting requests found it rebuilt (one may race the first)


def test_an_old_list_is_served_while_a_background_rebuild_runs(evconn: Any, prefix: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kvmkit.api import vm_cache

    class Clock:  # the list's age moves only when the test moves it (a loaded machine cannot age it meanwhile)
        now = 1000.0

        def monotonic(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(vm_cache, "time", clock)
    cache = new_cache(lambda: evconn, max_age=0.2, stale_limit=3600)
    cache.current()
    clock.now += 0.3
    assert cache.lookup(evconn) is not None  # old but not invalidated: served at once ...
    wait_until(lambda: cache.rebuilds == 2)  # ... while a thread rebuilds it
    assert cache.lookup(evconn) is not None and cache.rebuilds == 2  # young again: served, no other rebuild
    clock.now += 0.3
    cache.stale_limit = 0.25
    assert cache.lookup(evconn) is None  # older than the limit: the request must wait for a rebuild


def test_delegated_rows(evconn: Any, prefix: str) -> None:
    for n in ("a", "b", "c"):
        evconn.defineXML(shell_xml(f"{prefix}{n}"))
    rows, _ = new_cache(lambda: evconn).current()
    from kvmkit.service.access.auth import Principal

    def delegated(names: set[str]) -> Principal:
        return Principal("d", "operator", 1, granted=frozenset(names))

    body = filtered(rows, delegated({f"{prefix}a", f"{prefix}c", f"{prefix}gone"}))
    assert [r["name"] for r in json.loads(body)] == [f"{prefix}a", f"{prefix}c"]
    assert json.loads(filtered(rows, delegated(set()))) == []


def test_a_task_body_invalidates_the_list_before_the_task_is_recorded(evconn: Any, tmp_path: Any) -> None:
    from kvmkit.service.tasks.runner import TaskRunner
    from kvmkit.store.db import Store

    cache = new_cache(lambda: evconn, max_age=3600)
    runner = invalidating_runner(TaskRunner, cache)(Store(f"sqlite:///{tmp_path}/tasks.db"), workers=1)
    try:
        def body(_ctx: Any) -> int:
            cache.current()  # the list is rebuilt while the task runs (e.g. a request came) ...
            assert cache.lookup(evconn) is not None
            return 42

        task = runner.submit("vm.start", "vm:x", body, user="u")
        wait_until(lambda: runner.get(task["id"])["state"] == "succeeded")
        assert cache.lookup(evconn) is None  # ... and is stale once the task shows as succeeded
    finally:
        runner.shutdown()


def test_events_nobody_could_have_seen_only_refresh_in_the_background(evconn: Any, prefix: str) -> None:
    cache = new_cache(lambda: evconn, max_age=3600, soft_limit=3600)  # no event-stream clients (observers 0)
    cache.current()
    name = f"{prefix}soft"
    dom = evconn.defineXML(shell_xml(name))  # an event from another program
    wait_until(lambda: any(r["name"] == name for r in json.loads(cache.lookup(evconn)[1])))  # served meanwhile
    assert cache.rebuilds == 2  # by one background rebuild
    dom.undefine()
    wait_until(lambda: all(r["name"] != name for r in json.loads(cache.lookup(evconn)[1])))
    assert cache.rebuilds == 3
    cache.soft_limit = 0  # marked longer ago than the limit: the request waits for a rebuild
    cache.invalidate_foreign()
    assert cache.lookup(evconn) is None
    cache.observers = lambda: 2  # with event-stream clients a foreign event invalidates at once
    cache.current()
    cache.invalidate_foreign()
    assert cache.lookup(evconn) is None
    cache.invalidate()  # a change through this server or a task: always invalidates
    assert cache.lookup(evconn) is None
