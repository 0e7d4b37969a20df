"""Issue 17 parity: every CLI command has an API operation and every API operation a CLI command, unless
tests/api/parity.toml says why; the table in docs/api.md is the rendering of that file.

The CLI's commands come from its Typer apps, the API's operations from the OpenAPI document of the app
(built on test:///default, not started). Rows marked ``pending`` name routes or commands another branch
brings: ``test_parity_complete`` fails until they are merged, ``test_parity_of_merged_rows`` checks the rest.
"""

from __future__ import annotations

import pytest

from tests.api import parity

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def found() -> tuple[dict, list[str], list[parity.Operation]]:
    return parity.load_table(), parity.cli_commands(), parity.api_operations()


def test_parity_of_merged_rows(found) -> None:
    table, commands, ops = found
    gaps = [p for p in parity.problems(table, commands, ops) if "(expected from " not in p]
    assert not gaps, "\n".join(gaps)


def test_parity_complete(found) -> None:
    """No gaps at all: also the pending rows' routes and commands exist (fails until their branches merge)."""
    table, commands, ops = found
    gaps = parity.problems(table, commands, ops)
    assert not gaps, "\n".join(gaps)


def test_the_table_sees_what_it_checks(found) -> None:
    """The enumerations are real: known commands and operations are found, with their roles."""
    _table, commands, ops = found
    assert {"vm create", "vm disk attach", "net host add", "host profile apply", "serve"} <= set(commands)
    by_key = {op.key: op for op in ops}
    assert by_key["PUT /api/v1/vms/{name}/xml"].role == "admin"
    assert by_key["GET /api/v1/vms/{name}/xml"].role == "viewer"
    assert by_key["POST /api/v1/vms/{name}/clone"].role == "operator"
    assert by_key["GET /healthz"].role is None
    action = by_key["POST /api/v1/vms/{name}/actions/{action}"]
    assert parity.matches("POST /api/v1/vms/{name}/actions/start", action)
    assert not parity.matches("POST /api/v1/vms/{name}/actions/explode", action)
    assert not parity.matches("GET /api/v1/vms/stats", by_key["GET /api/v1/vms/{name}"])  # no enum: no literal


def test_a_command_without_a_row_is_a_gap(found) -> None:
    table, commands, ops = found
    rows = dict(table["cli"])
    del rows["vm clone"]
    gaps = parity.problems({**table, "cli": rows}, commands, ops)
    assert any("`kvmkit vm clone` has no row" in g for g in gaps)
    assert any("POST /api/v1/vms/{name}/clone has no CLI command" in g for g in gaps)


def test_docs_show_the_table(found) -> None:
    table, _commands, ops = found
    section = parity.docs_section(parity.DOCS.read_text())
    assert section is not None, f"{parity.DOCS} lacks the parity markers"
    assert section == parity.render(table, ops), "docs/api.md is out of date: run `python -m tests.api.parity --write`"
