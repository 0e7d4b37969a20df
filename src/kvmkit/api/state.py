"""What the server holds for its lifetime: store, task runner, event hub, the hosts (inventory + connection
pool), limiter, the cached VM lists, the cache of authenticated callers, and the metrics (request counts,
exporter, sampler).

``ServerState.hv`` is the handle of the host the current request works on: the one its ``?host=`` names
(api/host_scope.py records it for the request), else the local host. Routes call ``st.hv.get()`` for the
connection and hand ``st.hv.get`` to task bodies, so a task keeps working on the host its request named.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from kvmkit.api.token_cache import TokenCache
from kvmkit.api.vm_cache import HostVMLists, VMListCache
from kvmkit.hosts.pool import HostHandle
from kvmkit.service.access.auth import RateLimiter
from kvmkit.service.metrics.requests import RequestCounter
from kvmkit.service.tasks.events import EventHub
from kvmkit.service.tasks.runner import TaskRunner
from kvmkit.store.db import Store

# the host named by the current request's ?host= (None: not given, the local host)
current_host: ContextVar[str | None] = ContextVar("kvmkit_host", default=None)


class Hypervisor(HostHandle):
    """The local host's pooled connection: reopened when libvirtd went away (e.g. after a restart), never
    hanging on an absent or stuck daemon (kvmkit.hosts.pool: bounded connects, short back-off, keepalives)."""

    def __init__(self, uri: str) -> None:
        super().__init__("local", uri, local=True)


@dataclass
class ServerState:
    store: Store
    runner: TaskRunner
    hub: EventHub
    hv: Any  # the local host's handle at construction; reading it gives the request's host (see below)
    vm_list: VMListCache  # the local host's VM list
    limiter: RateLimiter = field(default_factory=RateLimiter)
    tls: bool = False
    recovered: list[dict[str, Any]] = field(default_factory=list)
    tokens: TokenCache = field(default_factory=TokenCache)
    event_clients: int = 0  # open /api/v1/events streams (changed on the event loop only)
    hosts: Any = None  # kvmkit.hosts.registry.Hosts: the inventory and the pool
    vm_lists: HostVMLists | None = None
    remote_hubs: dict[str, EventHub] = field(default_factory=dict)
    access_generation: int = 0  # bumped by every change request: open consoles check their access again
    requests: RequestCounter = field(default_factory=RequestCounter)  # kvmkit_api_requests_total
    exporter: Any = None  # the /metrics collector (kvmkit.service.metrics.exporter.Exporter), made at first scrape
    sampler: Any = None  # the history sampler thread (kvmkit.service.metrics.sampler.Sampler); None when off

    def changed(self, *, vms: bool = True) -> None:
        """A change request was answered: forget cached callers and (unless ``vms`` is false: the request
        changes no VM, e.g. a login) mark the VM lists stale."""
        self.tokens.clear()
        if vms and self.vm_lists is not None:
            self.vm_lists.invalidate()
        elif vms:
            self.vm_list.invalidate()
        self.access_generation += 1

    @property
    def local_hv(self) -> Any:
        return self.__dict__["_local_hv"]

    def host_handle(self, name: str | None) -> Any:
        """The handle of host ``name`` (None or 'local': the local host)."""
        if not name or name == "local" or self.hosts is None:
            return self.__dict__["_local_hv"]
        return self.hosts.resolve(name)


def _get_hv(self: ServerState) -> Any:
    return self.host_handle(current_host.get())


def _set_hv(self: ServerState, value: Any) -> None:
    self.__dict__["_local_hv"] = value


ServerState.hv = property(_get_hv, _set_hv)  # type: ignore[assignment,method-assign]
