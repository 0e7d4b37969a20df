"""Keeps the server in step with the host inventory: it is read again every few seconds (a host added or
removed by the CLI, or by another server on the same database, is picked up without a restart), and every
other host gets an event connection of its own whose VM events go onto the event stream with their
``host`` (the pool's monitor threads report the hosts' up/down states)."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("kvmkit.api")
INTERVAL_S = 2.0


def sync(st: Any) -> None:
    """One pass: inventory -> VM lists, event connections."""
    from kvmkit.service.tasks.events import EventHub

    records = st.hosts.reload(retain=False)
    remote = {r.name: r.connect_uri for r in records if not r.local}
    st.vm_lists.retain(set(remote))  # first what uses a removed host's connection (its events), then the pool
    for name, hub in list(st.remote_hubs.items()):
        if remote.get(name) != hub.uri:
            hub.stop()
            del st.remote_hubs[name]
    st.hosts.retain()
    for name, uri in remote.items():
        if name in st.remote_hubs:
            continue
        hub = EventHub(uri, host=name)

        def forward(ev: dict[str, Any]) -> None:
            if ev.get("type") == "vm":  # host up/down: from the pool, once per change
                st.hub.publish(ev)

        hub.subscribe(forward)
        hub.start()
        st.remote_hubs[name] = hub


def watch_inventory(st: Any, interval: float = INTERVAL_S) -> threading.Thread:
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            try:
                sync(st)
            except Exception:
                log.debug("inventory sync failed", exc_info=True)

    try:
        sync(st)
    except Exception as err:
        log.error("cannot follow the host inventory: %s", err)
    t = threading.Thread(target=loop, name="kvmkit-inventory", daemon=True)
    t.start()
    return t
