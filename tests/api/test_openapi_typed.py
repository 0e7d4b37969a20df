"""Issue 17, item 4: the OpenAPI document is the contract: every body and answer typed, no object bags,
every error the shared error model, versioned, and committed as docs/openapi.json.

The document is the app's own (create_app on test:///default, not started). A failure lists every
offending operation, one per line (``METHOD /path status: where: what``), so a route merged later is
easy to fix: declare its answer as an ``Out`` model (kvmkit/api/models/base.py).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.api import openapi_check

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def app() -> Any:
    return openapi_check.build_app()


@pytest.fixture(scope="module")
def doc(app: Any) -> dict[str, Any]:
    return openapi_check.document(app)


def test_no_untyped_answer_body_or_error(doc: dict[str, Any]) -> None:
    problems = openapi_check.untyped(doc)
    assert not problems, f"{len(problems)} untyped part(s) of the OpenAPI document:\n" + "\n".join(problems)


def test_answers_are_out_models(app: Any) -> None:
    """Out models drop nothing silently under test: a field the service returns and the model lacks fails."""
    problems = openapi_check.not_out_models(app)
    assert not problems, "response models must derive from kvmkit.api.models.base.Out:\n" + "\n".join(problems)


def test_the_walk_finds_what_it_must() -> None:
    """The checker itself: a bag, an object without properties, {} and a dangling reference are found; a
    typed map and a marked JSON value are not."""
    doc = {"paths": {"/x": {"get": {"responses": {
        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}},
        "404": {"description": "no content"}}}}},
        "components": {"schemas": {"A": {"type": "object", "properties": {
            "bag": {"type": "object", "additionalProperties": True},
            "empty": {"type": "object"},
            "anything": {},
            "gone": {"$ref": "#/components/schemas/Missing"},
            "items": {"type": "array", "items": {}},
            "map": {"type": "object", "additionalProperties": {"type": "integer"}},
            "marked": {"description": "see x", "x-kvmkit-json": True}}}}}}
    found = "\n".join(openapi_check.untyped(doc))
    for where in ("A.bag: an object bag", "A.empty: an object without properties", "A.anything: untyped",
                  "A.gone: refers to a missing component", "A.items[]: untyped",
                  "GET /x 404: the error body is not the shared error model"):
        assert where in found, found
    assert "A.map" not in found and "A.marked" not in found


def test_versioned(doc: dict[str, Any]) -> None:
    from kvmkit import __version__

    info = doc["info"]
    assert info["x-api-version"] == "v1"
    assert info["x-kvmkit-version"] == __version__
    assert info["version"] == f"v1+kvmkit.{__version__}"
    assert all(p.startswith("/api/v1/") or p in ("/healthz", "/readyz", "/metrics") for p in doc["paths"])


def test_schema_names_are_model_names(doc: dict[str, Any]) -> None:
    """Two models of one name get their module path as schema name (kvmkit__api__...): the contract would then
    change whenever a module moves. Every schema is named by its model alone."""
    clashing = [name for name in doc["components"]["schemas"] if "__" in name]
    assert not clashing, f"give these models names of their own: {clashing}"


def test_task_results_are_published(doc: dict[str, Any]) -> None:
    """One Task model for every 202 and the tasks routes; each kind's result schema is a component."""
    from kvmkit.api.models.task_results import results

    schemas = doc["components"]["schemas"]
    mapping = schemas["Task"]["properties"]["result"]["x-kvmkit-results"]
    assert set(mapping) == set(results())
    assert schemas["Task"]["properties"]["result"]["x-kvmkit-failed-result"] == {
        "$ref": "#/components/schemas/TaskRecovery"}
    for kind, ref in mapping.items():
        assert ref["$ref"].rsplit("/", 1)[-1] in schemas, kind
    task_refs = set()
    for _method, _path, op in openapi_check.operations(doc):
        if "202" in op["responses"]:
            task_refs.add(json.dumps(op["responses"]["202"]["content"]["application/json"]["schema"]))
    task_refs |= {json.dumps(doc["paths"]["/api/v1/tasks/{task_id}"]["get"]["responses"]["200"]["content"]
                             ["application/json"]["schema"])}
    assert task_refs == {json.dumps({"$ref": "#/components/schemas/Task"})}
    assert "TaskAccepted" not in schemas and "HTTPValidationError" not in schemas


def test_errors_and_media_types(doc: dict[str, Any]) -> None:
    paths = doc["paths"]
    vm = paths["/api/v1/vms/{name}"]["get"]["responses"]
    assert vm["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert vm["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Invalid"}
    assert {"401", "403", "500", "503"} <= set(vm)
    assert "401" not in paths["/healthz"]["get"]["responses"]
    assert set(doc["components"]["schemas"]["Invalid"]["properties"]) >= {"error", "hint", "code", "fields"}
    assert "text/event-stream" in paths["/api/v1/events"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    download = paths["/api/v1/pools/{pool}/volumes/{name}/content"]["get"]["responses"]["200"]["content"]
    assert download["application/octet-stream"]["schema"]["format"] == "binary"
    vv = paths["/api/v1/vms/{name}/console/spice.vv"]["get"]["responses"]["200"]["content"]
    assert vv["application/x-virt-viewer"]["schema"]["type"] == "string"
    login = paths["/api/v1/auth/login"]["post"]["requestBody"]["content"]
    assert login["application/json"]["schema"] == {"$ref": "#/components/schemas/LoginBody"}


def test_strict_answers_name_a_missing_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under KVMKIT_STRICT_RESPONSES a field the model lacks fails naming it; without, it is dropped."""
    from pydantic import ValidationError

    import kvmkit.api.models.task_results  # noqa: F401 - registers the check of results
    from kvmkit.api.models.access import User
    from kvmkit.api.models.tasks import Task

    row = {"name": "u", "role": "viewer", "vm_scope": "all", "disabled": False, "created_at": None, "extra": 1}
    monkeypatch.setenv("KVMKIT_STRICT_RESPONSES", "1")
    with pytest.raises(ValidationError, match=r"User does not declare extra"):
        User.model_validate(row)
    task = {"id": "t", "kind": "vm.explode", "target": "vm:x", "state": "succeeded", "percent": 100,
            "message": "done", "error": None, "result": {"name": "x"}, "user": "u", "created_at": None,
            "finished_at": None}
    with pytest.raises(ValidationError, match=r"task kind 'vm.explode' has no result model"):
        Task.model_validate(task)
    with pytest.raises(ValidationError, match=r"VMActionDone"):
        Task.model_validate({**task, "kind": "vm.start", "result": {"name": "x"}})  # action, state missing
    recovered = {**task, "kind": "vm.create", "state": "failed", "result": {"recovery": ["undefined VM x"]}}
    assert Task.model_validate(recovered).result == {"recovery": ["undefined VM x"]}
    with pytest.raises(ValidationError, match=r"TaskRecovery does not declare name"):
        Task.model_validate({**recovered, "result": {"name": "x"}})
    monkeypatch.setenv("KVMKIT_STRICT_RESPONSES", "0")
    assert "extra" not in User.model_validate(row).model_dump()
    assert Task.model_validate(task).result == {"name": "x"}


def test_committed_document_is_current(doc: dict[str, Any]) -> None:
    committed = openapi_check.COMMITTED
    assert committed.exists(), "docs/openapi.json is missing: run `python -m tests.api.openapi_check --write`"
    assert committed.read_text() == openapi_check.rendered(doc), \
        "docs/openapi.json is out of date: run `python -m tests.api.openapi_check --write`"


def test_docs_say_where_and_how(doc: dict[str, Any]) -> None:
    text = (openapi_check.ROOT / "docs" / "api.md").read_text()
    assert "/api/v1/openapi.json" in text and "docs/openapi.json" in text
    assert re.search(r"additive", text), "docs/api.md states the compatibility rule"
    section = openapi_check.docs_section(text)
    assert section is not None, "docs/api.md lacks the task-results markers"
    assert section == openapi_check.results_table(doc), \
        "docs/api.md's task result table is out of date: run `python -m tests.api.openapi_check --write`"
