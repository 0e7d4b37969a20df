"""The FastAPI application: ``create_app(db_url, uri)`` wires the store, tasks, events and routers.

At start-up it migrates the database (Alembic ``upgrade head``), registers libvirt's event loop, recovers
tasks interrupted by a previous crash, and starts the event connection.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

API = "/api/v1"
log = logging.getLogger("kvmkit.api")


def create_app(db_url: str | None = None, uri: str | None = None, *, tls: bool = False,
               workers: int = 4) -> FastAPI:
    from kvmkit import __version__
    from kvmkit.api import errors
    from kvmkit.api.audit_mw import AuditMiddleware
    from kvmkit.config import default_uri

    uri = uri or default_uri()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = build_state(db_url, uri, tls=tls, workers=workers)
        app.state.kvmkit = st
        import gc

        gc.collect()
        gc.freeze()  # the start-up objects (routes, models, mappers ...) are never scanned again: shorter GC pauses
        try:
            yield
        finally:
            st.hub.stop()
            for remote in list(st.remote_hubs.values()):
                remote.stop()
            st.runner.shutdown()
            st.vm_lists.close()
            st.hosts.pool.close()

    app = FastAPI(title="kvmkit", version=__version__, lifespan=lifespan,
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None,
                  description="KVM management over libvirt. Every route but login and health needs a token: "
                              "`Authorization: Bearer TOKEN`. Long operations answer 202 with a task.")
    errors.install(app)
    app.add_middleware(AuditMiddleware)
    from fastapi import Depends

    import kvmkit.api.routes_audit as routes_audit
    import kvmkit.api.routes_auth as routes_auth
    import kvmkit.api.routes_console as routes_console
    import kvmkit.api.routes_events as routes_events
    import kvmkit.api.routes_health as routes_health
    import kvmkit.api.routes_host as routes_host
    import kvmkit.api.routes_hosts as routes_hosts
    import kvmkit.api.routes_migration as routes_migration
    import kvmkit.api.routes_networks as routes_networks
    import kvmkit.api.routes_pools as routes_pools
    import kvmkit.api.routes_snapshots as routes_snapshots
    import kvmkit.api.routes_tasks as routes_tasks
    import kvmkit.api.routes_tokens as routes_tokens
    import kvmkit.api.routes_users as routes_users
    import kvmkit.api.routes_vm_copies as routes_vm_copies
    import kvmkit.api.routes_vm_devices as routes_vm_devices
    import kvmkit.api.routes_vm_runtime as routes_vm_runtime
    import kvmkit.api.routes_vm_xml as routes_vm_xml
    import kvmkit.api.routes_vms as routes_vms
    from kvmkit.api.host_scope import host_scope

    # routers of what lives on a libvirt host take ?host=NAME (api/host_scope.py); these do not
    hostless = {routes_auth, routes_tasks, routes_events, routes_users, routes_tokens, routes_audit, routes_hosts}
    scoped = [Depends(host_scope)]
    app.include_router(routes_health.router)
    for mod in (routes_auth, routes_vms, routes_snapshots, routes_tasks, routes_events, routes_users, routes_tokens,
                routes_audit, routes_pools, routes_networks,
                routes_vm_copies, routes_vm_devices, routes_vm_runtime, routes_vm_xml, routes_host, routes_hosts,
                routes_migration):
        app.include_router(mod.router, prefix=API, dependencies=[] if mod in hostless else scoped)
    app.include_router(routes_migration.hosts_router, prefix=API)  # evacuate, cpu-baseline: not host-scoped
    app.include_router(routes_console.router, dependencies=scoped)  # its path carries the /api/v1 prefix itself
    return app


def build_state(db_url: str | None, uri: str, *, tls: bool = False, workers: int = 4) -> Any:
    from kvmkit.api import vm_copy_jobs, vm_jobs
    from kvmkit.api.host_scope import host_scoped_runner
    from kvmkit.api.state import ServerState
    from kvmkit.api.vm_cache import HostVMLists, VMListCache, invalidating_runner
    from kvmkit.hosts.pool import HostPool
    from kvmkit.hosts.registry import Hosts
    from kvmkit.service.tasks.events import EventHub, register_event_impl
    from kvmkit.service.tasks.runner import TaskRunner
    from kvmkit.store.db import Store

    register_event_impl()  # before any connection is opened, so keepalive and events work
    store = Store(db_url)
    hub = EventHub(uri)

    def host_state(name: str, state: str, error: str | None) -> None:
        if name != "local":  # the local host's come from the hub's own event connection
            hub.publish({"type": "host", "host": name, "state": state, "error": error})

    pool = HostPool(uri, on_state=host_state)
    hosts = Hosts(store, pool)
    hv = pool.local
    vm_list = VMListCache(hv.get, host="local")
    vm_lists = HostVMLists(vm_list)
    hub.subscribe(vm_lists.on_hub_event)
    runner = host_scoped_runner(invalidating_runner(TaskRunner, vm_lists))(store, workers=workers,
                                                                          publish=hub.publish)
    runner.host_conn = lambda name: hosts.resolve(name).get()
    vm_jobs.register_recovery()
    vm_copy_jobs.register()
    st = ServerState(store=store, runner=runner, hub=hub, hv=hv, tls=tls, vm_list=vm_list, hosts=hosts,
                     vm_lists=vm_lists)
    vm_list.observers = vm_lists.observers = lambda: st.event_clients
    try:
        hosts.reload()
    except Exception as err:
        log.error("cannot read the host inventory at start-up: %s", err)
    try:
        conn = hv.get()
    except Exception as err:
        log.error("libvirt not reachable at start-up (%s); interrupted tasks are recovered later", err)
        conn = None
    st.recovered = runner.recover(conn)
    hub.start()
    pool.start_monitor()
    from kvmkit.api.host_watch import watch_inventory

    watch_inventory(st)
    return st
