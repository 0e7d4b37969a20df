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
    trusted_proxy: str = typer.Option(None, "--trusted-proxy", metavar="ADDR[,ADDR]",
                                      help="addresses of reverse proxies whose X-Forwarded-For/-Proto headers are "
                                           "believed (default: none; the headers are ignored)"),
    allowed_origin: str = typer.Option(None, "--allowed-origin", metavar="ORIGIN[,ORIGIN]",
                                       help="other origins (scheme://host:port) whose pages may open consoles "
                                            "(default: only the server's own origin)"),
    max_body: str = typer.Option("1M", "--max-body",
                                 help="largest request body accepted (413 above it); streamed uploads are exempt"),
) -> None:
    """Serve the API at /api/v1 (OpenAPI at /api/v1/openapi.json, /healthz, /readyz). Migrates the
    database, recovers tasks a previous server left unfinished, and follows libvirt events. Several servers
    may share one PostgreSQL database: each heartbeats every KVMKIT_HEARTBEAT_S seconds (5) and takes over
    the tasks of one silent for KVMKIT_SERVER_TIMEOUT_S (30); see docs/api.md."""
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

    from kvmkit.server import configure_security, redact_logs
    from kvmkit.spec.common import parse_size_bytes

    proxies = _addresses(trusted_proxy, "--trusted-proxy")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = create_server(db, settings.connect, tls=bool(tls_cert), workers=workers)
    configure_security(api, allowed_origins=_origins(allowed_origin),
                       max_body_bytes=parse_size_bytes(max_body, "--max-body"))
    # proxy headers only from the proxies named: uvicorn's default believes any loopback client
    config = uvicorn.Config(api, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                            log_level=log_level, timeout_graceful_shutdown=3, proxy_headers=bool(proxies),
                            forwarded_allow_ips=list(proxies) if proxies else None)
    redact_logs()  # uvicorn configured its loggers in Config(): no token or ticket in any log line
    uvicorn.Server(config).run()


def _addresses(value: str | None, option: str) -> list[str]:
    import ipaddress

    from kvmkit.errors import InvalidInput

    out = []
    for item in (value or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            addr = ipaddress.ip_network(item, strict=False) if "/" in item else ipaddress.ip_address(item)
            out.append(str(addr))
        except ValueError:
            raise InvalidInput(f"{option}: {item!r} is not an IP address or network",
                               hint="give addresses like 127.0.0.1 or 10.0.0.0/24, separated by commas") from None
    return out


def _origins(value: str | None) -> list[str]:
    from urllib.parse import urlsplit

    from kvmkit.errors import InvalidInput

    out = []
    for item in (value or "").split(","):
        item = item.strip().rstrip("/")
        if not item:
            continue
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
            raise InvalidInput(f"--allowed-origin: {item!r} is not an origin",
                               hint="give scheme://host[:port], e.g. https://portal.example.com")
        out.append(f"{parts.scheme}://{parts.netloc.lower()}")
    return out
