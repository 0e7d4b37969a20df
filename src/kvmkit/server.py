"""The server kvmkit serve runs: the REST API (kvmkit.api) with the web portal (kvmkit.web) on one origin.

The composition root: the only module that knows both front ends. The portal talks to the API over HTTP
like any other client; neither package imports the other.
"""

from __future__ import annotations

from fastapi import FastAPI


def create_server(db_url: str | None = None, uri: str | None = None, *, tls: bool = False,
                  workers: int = 4) -> FastAPI:
    from kvmkit.api.app import create_app
    from kvmkit.web.routes import install as install_portal

    app = create_app(db_url, uri, tls=tls, workers=workers)
    install_portal(app)
    return app


def configure_security(app: FastAPI, *, allowed_origins: list[str], max_body_bytes: int) -> None:
    """What ``kvmkit serve`` was told: other origins allowed to open consoles, the request body cap."""
    from kvmkit.api.middleware.security import settings_of

    sec = settings_of(app)
    sec.allowed_origins = frozenset(allowed_origins)
    sec.max_body_bytes = max_body_bytes


def redact_logs() -> None:
    """No token, ticket or password in any log line (call after uvicorn configured its loggers)."""
    from kvmkit.api.middleware.log_redact import install

    install()
