"""Map kvmkit errors to HTTP responses: ``{"error", "hint", "code"}`` with the error's http_status."""

from __future__ import annotations

import logging

import libvirt
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kvmkit.errors import KvmkitError

log = logging.getLogger("kvmkit.api")


def install(app: FastAPI) -> None:
    @app.exception_handler(KvmkitError)
    async def kvmkit_error(_request: Request, err: KvmkitError) -> JSONResponse:
        headers = {}
        retry = getattr(err, "retry_after", None)
        if retry:
            headers["Retry-After"] = str(retry)
        if err.http_status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(err.to_dict(), status_code=err.http_status, headers=headers)

    @app.exception_handler(libvirt.libvirtError)
    async def libvirt_error(request: Request, err: libvirt.libvirtError) -> JSONResponse:
        """A libvirt error a route did not translate: the matching kvmkit error (503 when libvirtd went away)."""
        from kvmkit.hypervisor.errors import translate

        mapped = translate(err)
        if mapped.http_status >= 500 and mapped.code != "host":
            log.warning("libvirt error on %s %s: %s", request.method, request.url.path, err)
        return await kvmkit_error(request, mapped)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error: {type(err).__name__}", "hint": "see the server log",
                             "code": "internal"}, status_code=500)
