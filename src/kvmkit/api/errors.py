"""Map errors to HTTP responses: ``{"error", "hint", "code"}`` with the error's http_status.

Validation failures (FastAPI's RequestValidationError, a pydantic ValidationError raised in a route)
answer 422 ``{"error", "hint", "code": "invalid", "fields": [{"loc": [...], "msg": "..."}]}``: each
field's location and what is wrong with it, never the input itself (a 422 must not echo a 200 MB body,
a password, or text the JSON encoder cannot even write).
"""

from __future__ import annotations

import logging
from typing import Any

import libvirt
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError, ResponseValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from kvmkit.errors import KvmkitError

log = logging.getLogger("kvmkit.api")
MAX_FIELDS = 20
MAX_MSG = 300


def _clean(value: Any) -> Any:
    """Text safe to encode as JSON: lone surrogates and control characters escaped, bounded length."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value if value == value and abs(value) != float("inf") else str(value)
    text = str(value).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(c if c >= " " else f"\\x{ord(c):02x}" for c in text)
    return text if len(text) <= MAX_MSG else text[:MAX_MSG] + "..."


def invalid_fields(errors: list[Any]) -> list[dict[str, Any]]:
    out = []
    for err in errors[:MAX_FIELDS]:
        loc = [_clean(p) for p in err.get("loc", ())]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append({"loc": loc, "msg": _clean(msg)})
    return out


def invalid_response(errors: list[Any]) -> JSONResponse:
    fields = invalid_fields(errors)
    first = fields[0] if fields else {"loc": [], "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "request"
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    body = {"error": f"invalid {where}: {first['msg']}{more}",
            "hint": "fix the named field(s); the shapes are in /api/v1/openapi.json", "code": "invalid",
            "fields": fields}
    return JSONResponse(body, status_code=422)


def answer_invalid(request: Request, model: str, errors: list[Any]) -> JSONResponse:
    """500: the answer does not fit its declared model (api/models/base.py): a bug to fix in the model or the
    service. The fields are logged and named (not their values: they may be secrets)."""
    fields = invalid_fields(errors)
    text = "; ".join(f"{'.'.join(str(p) for p in f['loc'])}: {f['msg']}" for f in fields[:5])
    log.error("answer of %s %s does not fit %s: %s", request.method, request.url.path, model, text)
    return JSONResponse({"error": f"internal error: the answer does not fit {model} ({text})",
                         "hint": "a bug: the model in kvmkit/api/models_*.py and the service disagree",
                         "code": "internal"}, status_code=500)


def install(app: FastAPI) -> None:
    @app.exception_handler(KvmkitError)
    async def kvmkit_error(_request: Request, err: KvmkitError) -> JSONResponse:
        headers = {}
        retry = getattr(err, "retry_after", None)
        if retry:
            headers["Retry-After"] = str(retry)
        if err.http_status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        body = {k: _clean(v) if isinstance(v, str) else v for k, v in err.to_dict().items()}
        return JSONResponse(body, status_code=err.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def request_invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        return invalid_response(list(err.errors()))

    @app.exception_handler(ValidationError)
    async def model_invalid(request: Request, err: ValidationError) -> JSONResponse:
        from kvmkit.api.models.base import OUT_MODELS

        if err.title in OUT_MODELS:  # an answer that does not fit its model: the server's fault, not the input's
            return answer_invalid(request, err.title, list(err.errors()))
        return invalid_response(list(err.errors()))

    @app.exception_handler(ResponseValidationError)
    async def response_invalid(request: Request, err: ResponseValidationError) -> JSONResponse:
        return answer_invalid(request, "the response model", list(err.errors()))

    @app.exception_handler(UnicodeError)
    async def bad_text(_request: Request, _err: UnicodeError) -> JSONResponse:
        # text that cannot be encoded (a lone surrogate) reached the database or libvirt: it came from input
        return JSONResponse({"error": "the request holds text that is not valid Unicode (a lone surrogate?)",
                             "hint": "send valid UTF-8 text", "code": "invalid"}, status_code=422)

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
