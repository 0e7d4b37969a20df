"""``kvmkit serve``: run the REST API server (FastAPI under uvicorn)."""

from __future__ import annotations

import os

import typer

from kvmkit.cli.context import settings

app = typer.Typer(help="run the REST API server", add_completion=False, invoke_without_command=True)


def parse_listen(listen: str) -> tuple[str, int]:
    from kvmkit.errors import InvalidInput

    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(f"invalid --listen '{listen}'", hint="use ADDRESS:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


@app.callback()
def serve(
    listen: str = typer.Option("127.0.0.1:8080", "--listen", help="address:port to listen on"),
    db: str = typer.Option(None, "--db", envvar="KVMKIT_DB",
                           help="database URL (default: SQLite in the data directory; postgresql+psycopg://...)"),
    tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate: serve HTTPS"),
    tls_key: str = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert"),
    workers: int = typer.Option(16, "--task-workers", min=1, max=64,
                                 help="tasks run in parallel (a VM create runs on its own libvirt connection)"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning, error"),
) -> None:
    """Serve the API at /api/v1 (OpenAPI at /api/v1/openapi.json, /healthz, /readyz). Migrates the
    database, recovers tasks a previous server left unfinished, and follows libvirt events."""
    from kvmkit.errors import InvalidInput

    host, port = parse_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise InvalidInput("--tls-cert and --tls-key go together", hint="give both, or neither for plain HTTP")
    for path in (tls_cert, tls_key):
        if path and not os.path.isfile(path):
            raise InvalidInput(f"TLS file {path} does not exist", hint="give the path of a PEM file")
    import faulthandler
    import logging
    import signal

    import uvicorn

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 PID` prints every thread's stack (debugging hangs)

    from kvmkit.server import create_server
    from kvmkit.store.db import Store

    Store(db).engine.dispose()  # migrate now: a bad --db fails here with one clear line, not a traceback

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = create_server(db, settings.connect, tls=bool(tls_cert), workers=workers)
    uvicorn.run(api, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key, log_level=log_level,
                timeout_graceful_shutdown=3)
