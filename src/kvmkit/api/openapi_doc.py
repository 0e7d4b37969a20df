"""The OpenAPI document, finished: versioned, every error typed, every task result published.

FastAPI builds the document from the routes' declarations; :func:`document` then
- versions it: ``info.version`` is ``v1+kvmkit.<kvmkit's version>`` (also ``x-api-version`` and
  ``x-kvmkit-version``); within v1 changes are additive (docs/api.md, "The OpenAPI document");
- documents the errors every route can answer (401 and 403 where a token is needed, 422 where there is
  input, 503 when libvirt does not answer, 500) and gives every 4xx/5xx the shared error model
  (api/models/errors.py: ``Error``, ``Invalid`` for 422) unless the route names its own;
- publishes each task kind's result schema (api/models/task_results.py) as components and maps them on
  ``Task.result`` (``x-kvmkit-results``);
- adds the session cookie as a second way in, and the login body's schema (the route reads it itself).

A route therefore declares only its answer (``response_model=`` or the return annotation, an ``Out``
model) and the statuses it can answer with why (``responses={404: {"description": ...}}``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

API_VERSION = "v1"
ERROR_REF = "#/components/schemas/Error"
INVALID_REF = "#/components/schemas/Invalid"
STANDARD_ERRORS = {
    "401": "no token, or an invalid, revoked or expired one",
    "403": "the caller's role (or delegation) does not allow it",
    "422": "invalid input: fields names each wrong field",
    "500": "an internal error or a failure of libvirt, QEMU or a host tool (the error says which; see the "
           "server log)",
    "503": "libvirtd is not answering (Retry-After says when to try again)",
}
EVENT_STREAM = {
    "type": "string",
    "description": "server-sent events: `event: hello|vm|task|host` and `data: <JSON>` lines, a comment line "
                   "every 10 s. vm: {vm, uuid, event, detail, reason?}; task: {type, task: Task}; host: "
                   "{event: connected|disconnected}",
}


def document(app: FastAPI) -> dict[str, Any]:
    """The finished document (built once, then cached on the app like FastAPI's own)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    from kvmkit import __version__

    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes,
                      tags=app.openapi_tags, servers=app.servers)
    doc["info"]["version"] = f"{API_VERSION}+kvmkit.{__version__}"
    doc["info"]["x-api-version"] = API_VERSION
    doc["info"]["x-kvmkit-version"] = __version__
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    _add_models(schemas)
    _security(doc)
    for item in doc.get("paths", {}).values():
        for op in item.values():
            _errors(op)
            _media_types(op)
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    app.openapi_schema = doc
    return doc


def install(app: FastAPI) -> None:
    app.openapi = lambda: document(app)  # type: ignore[method-assign]


def _add_models(schemas: dict[str, Any]) -> None:
    """The error models, the login body and every task result model, as components."""
    from pydantic import BaseModel
    from pydantic.json_schema import models_json_schema

    from kvmkit.api.models.errors import Error, Invalid
    from kvmkit.api.models.task_results import results
    from kvmkit.api.models.tasks import TaskRecovery
    from kvmkit.api.routes.auth import LoginBody

    table = results()
    models: list[type[BaseModel]] = [Error, Invalid, LoginBody, TaskRecovery, *dict.fromkeys(table.values())]
    refs, top = models_json_schema([(m, "serialization") for m in models],
                                   ref_template="#/components/schemas/{model}")
    for name, schema in top.get("$defs", {}).items():
        have = schemas.setdefault(name, schema)  # FastAPI's own, when a route answers it already
        if set(have.get("properties", {})) != set(schema.get("properties", {})):
            raise RuntimeError(f"two different schemas are named {name} in the OpenAPI document: rename one model")
    by_model = {m: refs[(m, "serialization")] for m in models}
    task = schemas.get("Task")
    if task is not None:
        result = task["properties"]["result"]
        result["x-kvmkit-results"] = {kind: by_model[m] for kind, m in sorted(table.items())}
        result["x-kvmkit-failed-result"] = by_model[TaskRecovery]


def _security(doc: dict[str, Any]) -> None:
    from kvmkit.api.deps import SESSION_COOKIE

    schemes = doc["components"].setdefault("securitySchemes", {})
    schemes["session"] = {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                          "description": "the portal's login session (POST /api/v1/auth/login sets it); changes "
                                         "need the X-CSRF-Token header"}
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if op.get("security"):
                op["security"] = [*op["security"], {"session": []}]


def _errors(op: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    authenticated = bool(op.get("security"))
    has_input = bool(op.get("parameters") or op.get("requestBody"))
    for code, text in STANDARD_ERRORS.items():
        if code in ("401", "403", "503") and not authenticated:
            continue
        if code == "422" and not has_input:
            continue
        responses.setdefault(code, {"description": text})
    if op.get("requestBody"):
        responses.setdefault("413", {"description": "the body is larger than the server's --max-body"})
    for code, resp in responses.items():
        if code[0] not in "45":
            continue
        content = resp.get("content") or {}
        schema = (content.get("application/json") or {}).get("schema")
        if schema is None or schema.get("$ref") == "#/components/schemas/HTTPValidationError":
            ref = INVALID_REF if code == "422" else ERROR_REF
            resp["content"] = {"application/json": {"schema": {"$ref": ref}}}
        if code == "422" and resp.get("description") == "Validation Error":
            resp["description"] = STANDARD_ERRORS["422"]


def _media_types(op: dict[str, Any]) -> None:
    """Non-JSON answers with their real media types and a schema (a string), never an empty one."""
    for code, resp in op.get("responses", {}).items():
        if not code.startswith("2"):
            continue
        for media, body in (resp.get("content") or {}).items():
            if "json" in media:
                continue
            if media == "text/event-stream":
                body["schema"] = EVENT_STREAM
            elif not body.get("schema"):
                body["schema"] = {"type": "string", "description": f"the {media} body"}
