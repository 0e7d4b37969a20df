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
    from kvmkit.service.metrics.sampler import interval_from_env

    metrics_interval = interval_from_env()  # a bad KVMKIT_METRICS_INTERVAL fails here, before serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        st = build_state(db_url, uri, tls=tls, workers=workers)
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
            st.runner.shutdown()
            st.vm_list.close()
            st.hv.close()

    app = FastAPI(title="kvmkit", version=__version__, lifespan=lifespan,
                  openapi_url=f"{API}/openapi.json", docs_url=f"{API}/docs", redoc_url=None,
                  description="KVM management over libvirt. Every route but login and health needs a token: "
                              "`Authorization: Bearer TOKEN`. Long operations answer 202 with a task.")
    errors.install(app)
    app.add_middleware(AuditMiddleware)
    install_security(app)
    from kvmkit.api.metrics_mw import RequestCountMiddleware

    app.add_middleware(RequestCountMiddleware)
    import kvmkit.api.routes_audit as routes_audit
    import kvmkit.api.routes_auth as routes_auth
    import kvmkit.api.routes_console as routes_console
    import kvmkit.api.routes_console_vnc as routes_console_vnc
    import kvmkit.api.routes_events as routes_events
    import kvmkit.api.routes_health as routes_health
    import kvmkit.api.routes_host as routes_host
    import kvmkit.api.routes_images as routes_images
    import kvmkit.api.routes_metrics as routes_metrics
    import kvmkit.api.routes_networks as routes_networks
    import kvmkit.api.routes_pools as routes_pools
    import kvmkit.api.routes_snapshots as routes_snapshots
    import kvmkit.api.routes_tasks as routes_tasks
    import kvmkit.api.routes_templates as routes_templates
    import kvmkit.api.routes_tokens as routes_tokens
    import kvmkit.api.routes_users as routes_users
    import kvmkit.api.routes_vm_copies as routes_vm_copies
    import kvmkit.api.routes_vm_devices as routes_vm_devices
    import kvmkit.api.routes_vm_runtime as routes_vm_runtime
    import kvmkit.api.routes_vm_xml as routes_vm_xml
    import kvmkit.api.routes_vms as routes_vms
    import kvmkit.api.routes_volumes as routes_volumes

    app.include_router(routes_health.router)
    for mod in (routes_auth, routes_vms, routes_snapshots, routes_tasks, routes_events, routes_users, routes_tokens,
                routes_audit, routes_pools, routes_networks,
                routes_vm_copies, routes_vm_devices, routes_vm_runtime, routes_vm_xml, routes_host, routes_metrics,
                routes_volumes, routes_images, routes_templates):
        app.include_router(mod.router, prefix=API)
    app.include_router(routes_console.router)  # its path carries the /api/v1 prefix itself
    app.include_router(routes_console_vnc.router)  # the same
    app.include_router(routes_metrics.scrape_router)  # /metrics, outside /api/v1
    from kvmkit.api import openapi_doc, task_results  # noqa: F401 - task_results: the strict check of results

    openapi_doc.install(app)  # versioned, errors and task results typed (api/openapi_doc.py)
    return app


def install_security(app: FastAPI) -> None:
    """The request pipeline around the routes, outermost first: security headers on every answer, the
    request guard (control characters in paths; anonymous change requests refused before their body is
    read), the body cap (413; streamed uploads exempt, see api/body_limit.py), then audit and the routes."""
    from kvmkit.api.body_limit import BodyLimitMiddleware
    from kvmkit.api.security import RequestGuardMiddleware, SecurityHeadersMiddleware, settings_of

    settings_of(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestGuardMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)


def build_state(db_url: str | None, uri: str, *, tls: bool = False, workers: int = 4) -> Any:
    from kvmkit.api import crash_watch, snapshot_jobs, storage_jobs, vm_copy_jobs, vm_jobs
    from kvmkit.api.state import Hypervisor, ServerState
    from kvmkit.api.vm_cache import VMListCache, invalidating_runner
    from kvmkit.service.tasks.events import EventHub, register_event_impl
    from kvmkit.service.tasks.runner import TaskRunner
    from kvmkit.store.db import Store

    register_event_impl()  # before any connection is opened, so keepalive and events work
    store = Store(db_url)
    hub = EventHub(uri)
    hv = Hypervisor(uri)
    vm_list = VMListCache(hv.get)
    hub.subscribe(vm_list.on_hub_event)
    runner = invalidating_runner(TaskRunner, vm_list)(store, workers=workers, publish=hub.publish)
    vm_jobs.register_recovery()
    vm_copy_jobs.register()
    snapshot_jobs.register_recovery()
    storage_jobs.register_recovery()
    st = ServerState(store=store, runner=runner, hub=hub, hv=hv, tls=tls, vm_list=vm_list)
    vm_list.observers = lambda: st.event_clients
    try:
        conn = hv.get()
    except Exception as err:
        log.error("libvirt not reachable at start-up (%s); interrupted tasks are recovered later", err)
        conn = None
    st.recovered = runner.recover(conn)
    crash_watch.install(st)  # restarts VMs whose QEMU died when their on_crash policy says restart
    hub.start()
    return st
