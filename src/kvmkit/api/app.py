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
    from kvmkit.api.middleware.audit import AuditMiddleware
    from kvmkit.config import default_uri

    uri = uri or default_uri()
    from kvmkit.service.metrics.sampler import interval_from_env

    metrics_interval = interval_from_env()  # a bad KVMKIT_METRICS_INTERVAL fails here, before serving
    from kvmkit.service.tasks.servers import timing_from_env

    heartbeat = timing_from_env()  # KVMKIT_HEARTBEAT_S, KVMKIT_SERVER_TIMEOUT_S: checked before serving too

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = build_state(db_url, uri, tls=tls, workers=workers, heartbeat=heartbeat)
        app.state.kvmkit = st
        if metrics_interval:
            from kvmkit.service.metrics.sampler import Sampler

            st.sampler = Sampler(st.store, st.hv.get, interval=metrics_interval).start()
        import gc

        gc.collect()
        gc.freeze()  # the start-up objects (routes, models, mappers ...) are never scanned again: shorter GC pauses
        try:
            yield
        finally:
            if st.sampler is not None:
                st.sampler.stop()
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
    install_security(app)
    from fastapi import Depends

    from kvmkit.api.middleware.metrics import RequestCountMiddleware

    app.add_middleware(RequestCountMiddleware)
    import kvmkit.api.routes.audit as routes_audit
    import kvmkit.api.routes.auth as routes_auth
    import kvmkit.api.routes.console as routes_console
    import kvmkit.api.routes.console_vnc as routes_console_vnc
    import kvmkit.api.routes.events as routes_events
    import kvmkit.api.routes.guest_os as routes_os
    import kvmkit.api.routes.health as routes_health
    import kvmkit.api.routes.host as routes_host
    import kvmkit.api.routes.hosts as routes_hosts
    import kvmkit.api.routes.images as routes_images
    import kvmkit.api.routes.metrics as routes_metrics
    import kvmkit.api.routes.migration as routes_migration
    import kvmkit.api.routes.networks as routes_networks
    import kvmkit.api.routes.pools as routes_pools
    import kvmkit.api.routes.servers as routes_servers
    import kvmkit.api.routes.snapshots as routes_snapshots
    import kvmkit.api.routes.tasks as routes_tasks
    import kvmkit.api.routes.templates as routes_templates
    import kvmkit.api.routes.tokens as routes_tokens
    import kvmkit.api.routes.users as routes_users
    import kvmkit.api.routes.vm_copies as routes_vm_copies
    import kvmkit.api.routes.vm_devices as routes_vm_devices
    import kvmkit.api.routes.vm_guest as routes_vm_guest
    import kvmkit.api.routes.vm_import as routes_vm_import
    import kvmkit.api.routes.vm_runtime as routes_vm_runtime
    import kvmkit.api.routes.vm_xml as routes_vm_xml
    import kvmkit.api.routes.vms as routes_vms
    import kvmkit.api.routes.volumes as routes_volumes
    from kvmkit.api.host_scope import HOST_RESPONSES, host_scope

    # routers of what lives on a libvirt host take ?host=NAME (api/host_scope.py); these do not
    hostless = {routes_auth, routes_tasks, routes_events, routes_users, routes_tokens, routes_audit, routes_hosts,
                routes_os, routes_servers}
    scoped = [Depends(host_scope)]
    app.include_router(routes_health.router)
    for mod in (routes_auth, routes_vm_import, routes_vms, routes_snapshots, routes_tasks, routes_events,
                routes_users, routes_tokens, routes_audit, routes_pools, routes_networks, routes_os,
                routes_vm_copies, routes_vm_devices, routes_vm_runtime, routes_vm_xml, routes_host, routes_metrics,
                routes_volumes, routes_images, routes_templates, routes_vm_guest, routes_hosts, routes_servers,
                routes_migration):
        app.include_router(mod.router, prefix=API, dependencies=[] if mod in hostless else scoped,
                           responses={} if mod in hostless else HOST_RESPONSES)
    app.include_router(routes_migration.hosts_router, prefix=API)  # evacuate, cpu-baseline: not host-scoped
    # the console routers' paths carry the /api/v1 prefix themselves
    app.include_router(routes_console.router, dependencies=scoped, responses=HOST_RESPONSES)
    app.include_router(routes_console_vnc.router, dependencies=scoped, responses=HOST_RESPONSES)
    app.include_router(routes_metrics.scrape_router)  # /metrics, outside /api/v1
    from kvmkit.api import openapi_doc
    from kvmkit.api.models import task_results  # noqa: F401 - the strict check of results

    openapi_doc.install(app)  # versioned, errors and task results typed (api/openapi_doc.py)
    return app


def install_security(app: FastAPI) -> None:
    """The request pipeline around the routes, outermost first: security headers on every answer, the
    request guard (control characters in paths; anonymous change requests refused before their body is
    read), the body cap (413; streamed uploads exempt, see api/middleware/body_limit.py), then audit and the routes."""
    from kvmkit.api.middleware.body_limit import BodyLimitMiddleware
    from kvmkit.api.middleware.security import RequestGuardMiddleware, SecurityHeadersMiddleware, settings_of

    settings_of(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestGuardMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)


def build_state(db_url: str | None, uri: str, *, tls: bool = False, workers: int = 4,
                heartbeat: tuple[float, float] | None = None) -> Any:
    """Everything the server holds. Several servers may share one PostgreSQL database: each registers
    itself and heartbeats (service/tasks/servers.py), takes over after servers that stop
    (service/tasks/reaper.py) and relays its task events to the others (service/tasks/relay.py)."""
    from kvmkit.api.host_scope import host_scoped_runner
    from kvmkit.api.jobs import snapshots as snapshot_jobs
    from kvmkit.api.jobs import storage as storage_jobs
    from kvmkit.api.jobs import vm_copies as vm_copy_jobs
    from kvmkit.api.jobs import vms as vm_jobs
    from kvmkit.api.state import ServerState
    from kvmkit.api.vm_cache import HostVMLists, VMListCache, invalidating_runner
    from kvmkit.api.watch import crashes as crash_watch
    from kvmkit.hosts.pool import HostPool
    from kvmkit.hosts.registry import Hosts
    from kvmkit.service.tasks.events import EventHub, register_event_impl
    from kvmkit.service.tasks.relay import TaskEventRelay
    from kvmkit.service.tasks.runner import TaskRunner
    from kvmkit.service.tasks.servers import DEFAULT_INTERVAL, DEFAULT_TIMEOUT, Membership
    from kvmkit.store.db import Store

    register_event_impl()  # before any connection is opened, so keepalive and events work
    store = Store(db_url)
    hub = EventHub(uri)

    def host_state(name: str, state: str, error: str | None) -> None:
        if name != "local":  # the local host's come from the hub's own event connection
            hub.publish({"type": "host", "host": name, "state": state, "error": error})

    pool = HostPool(uri, on_state=host_state, per_thread=True)  # request threads and workers: hosts/leases.py
    hosts = Hosts(store, pool)
    hv = pool.local
    vm_list = VMListCache(hv.get, host="local")
    vm_lists = HostVMLists(vm_list)
    hub.subscribe(vm_lists.on_hub_event)
    interval, timeout = heartbeat or (DEFAULT_INTERVAL, DEFAULT_TIMEOUT)
    relay = TaskEventRelay(store, hub.publish, lambda task_id: runner.get(task_id))
    runner = host_scoped_runner(invalidating_runner(TaskRunner, vm_lists))(
        store, workers=workers, publish=relay.publish, membership=Membership(store, interval=interval, timeout=timeout))
    runner.relay = relay
    runner.host_conn = lambda name: hosts.resolve(name).get()
    vm_jobs.register_recovery()
    vm_copy_jobs.register()
    snapshot_jobs.register_recovery()
    storage_jobs.register_recovery()
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
    st.recovered = runner.recover(conn)  # after servers that stopped (this one's predecessor among them)
    relay.start()
    runner.start_watchdog(hv.get)
    crash_watch.install(st)  # restarts VMs whose QEMU died when their on_crash policy says restart
    hub.start()
    pool.start_monitor()
    from kvmkit.api.watch.hosts import watch_inventory

    watch_inventory(st)
    return st
