"""The server's answer to a VM whose QEMU process died: restart it when its crash policy says so.

libvirt does not apply ``<on_crash>`` when QEMU itself ends (see kvmkit.service.vms.crash), so the server
watches the event hub for ``stopped`` events with detail ``failed`` (the emulator died) and, for a VM whose
policy restarts, runs a ``vm.crash-restart`` task holding the VM (so it is serialised with every other
operation on it and shows in GET /api/v1/tasks). Every decision is audited as ``vm.crash`` (user
``kvmkit``): restarted, left shut off (its policy), or given up. A VM that dies ``LIMIT`` times within
``WINDOW_S`` seconds is left shut off (a crash loop is not fixed by restarting it again), and said so.

Only a running server restarts VMs: a QEMU that dies while ``kvmkit serve`` is down stays shut off, and the
server does not restart at start-up VMs it finds shut off after a crash (it cannot tell when that was).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict, deque
from typing import Any

from kvmkit.api.state import ServerState

log = logging.getLogger("kvmkit.api")
STOPPED_FAILED = 5  # VIR_DOMAIN_EVENT_STOPPED_FAILED: the emulator ended unexpectedly
LIMIT = 3
WINDOW_S = 600.0
USER = "kvmkit"


class CrashWatch:
    def __init__(self, st: ServerState, *, limit: int = LIMIT, window: float = WINDOW_S) -> None:
        self.st, self.limit, self.window = st, limit, window
        self._recent: dict[str, deque[float]] = defaultdict(deque)
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="kvmkit-crash-watch", daemon=True)
        self._thread.start()

    def on_event(self, event: dict[str, Any]) -> None:
        """Hub subscriber (runs on libvirt's event loop thread: hands the work to this watcher's thread)."""
        if event.get("type") == "vm" and event.get("event") == "stopped" and event.get("detail") == STOPPED_FAILED:
            self._queue.put(str(event.get("vm")))

    def _run(self) -> None:
        while True:
            name = self._queue.get()
            try:
                self._handle(name)
            except Exception:  # never let the watcher die
                log.exception("handling the crash of VM %s failed", name)

    def _audit(self, name: str, result: str, detail: str) -> None:
        from kvmkit.service.access import audit

        audit.record(self.st.store, USER, "vm.crash", f"vm:{name}", result, detail)
        log.warning("VM %s: QEMU process ended; %s", name, detail)

    def _handle(self, name: str) -> None:
        from kvmkit.errors import KvmkitError
        from kvmkit.service.tasks.runner import Busy
        from kvmkit.service.vms.crash import RESTART_ACTIONS, crash_policy
        from kvmkit.service.vms.domains import domain

        try:
            policy = crash_policy(domain(self.st.hv.get(), name))
        except KvmkitError as err:
            self._audit(name, "failed", f"cannot read its crash policy: {err}")
            return
        if policy not in RESTART_ACTIONS:
            self._audit(name, "ok", f"on_crash policy {policy}: left shut off")
            return
        now = time.monotonic()
        recent = self._recent[name]
        while recent and now - recent[0] > self.window:
            recent.popleft()
        if len(recent) >= self.limit:
            self._audit(name, "denied", f"on_crash policy {policy}, but it crashed {len(recent) + 1} times within "
                        f"{self.window:.0f} s: not restarted again (start it by hand once the cause is fixed)")
            return
        recent.append(now)
        try:
            task = self.st.runner.submit("vm.crash-restart", f"vm:{name}", _body(self.st, name),
                                         intent={"vm": name, "policy": policy}, user=USER)
        except Busy as err:
            self._audit(name, "denied", f"on_crash policy {policy}, but {err.message}: not restarted")
            return
        self._audit(name, "accepted", f"on_crash policy {policy}: restarting (task {task['id']})")


def _body(st: ServerState, name: str) -> Any:
    def run(ctx: Any) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.vms.crash import restart_after_crash

        ctx.step("restart", 10, f"restarting VM {name}: its QEMU process ended", vm=name)
        return restart_after_crash(worker_connection(st.hv.get()), name)

    return run


def install(st: ServerState) -> CrashWatch:
    watch = CrashWatch(st)
    st.hub.subscribe(watch.on_event)
    return watch
