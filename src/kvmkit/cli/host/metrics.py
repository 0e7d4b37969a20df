"""``kvmkit host metrics``: the host's history for charts, as ``GET /api/v1/host/metrics`` answers it."""

from __future__ import annotations

import typer

from kvmkit.cli.db_option import DB, open_store
from kvmkit.cli.vm.metrics import SINCE, STEP, UNTIL, show


def register(app: typer.Typer) -> None:
    @app.command()
    def metrics(since: str | None = SINCE, until: str | None = UNTIL, step: str | None = STEP,
                db: str | None = DB) -> None:
        """The host's CPU, memory, KSM savings, running VMs and the VMs' disk and network totals (recorded by
        kvmkit serve). The global ``--host NAME`` picks the host."""
        from kvmkit.cli.context import connection, settings
        from kvmkit.cli.output import emit
        from kvmkit.errors import NotFound
        from kvmkit.service.metrics import query
        from kvmkit.service.metrics.collect import conn_info

        store = open_store(db)
        name = conn_info(connection()).host
        if settings.host is not None and not query.known(store, "host", name):
            raise NotFound(f"no metrics history for host '{settings.host}' ({name})",
                           hint="leave out --host for the --connect host, or name a host kvmkit serve samples")
        emit(query.history(store, "host", name, since=since, until=until, step=step), show)
