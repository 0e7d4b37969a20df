"""The shared error answer of every 4xx and 5xx: ``{"error", "hint", "code"}`` (api/errors.py writes it).

422 adds ``fields`` (where and what, never the input); a 409 about a busy object adds ``task_id``.
api/openapi_doc.py documents every error response of the document with these models.
"""

from __future__ import annotations

from pydantic import Field

from kvmkit.api.models.base import Out

CODES = ("unauthorized", "forbidden", "not_found", "conflict", "invalid_state", "invalid", "too_large",
         "length_required", "truncated", "sha256_mismatch", "rate_limited", "cancelled", "host", "failed",
         "internal", "client_gone", "no_display", "error")


class Error(Out):
    """What went wrong and how to fix it."""

    error: str = Field(description="what was wrong, naming the object or field")
    hint: str | None = Field(None, description="how to fix it")
    code: str = Field(description="a stable word for programs: " + ", ".join(CODES)
                      + " (new codes may be added within v1)")
    task_id: str | None = Field(None, description="409 when the object is busy: the task holding it "
                                                  "(GET /api/v1/tasks/{task_id})")


class InvalidField(Out):
    loc: list[str | int] = Field(description="where: e.g. [\"body\", \"vcpus\"] or [\"query\", \"limit\"]")
    msg: str = Field(description="what is wrong with it")


class Invalid(Error):
    """422: the request does not fit its schema (or a value the spec refuses)."""

    fields: list[InvalidField] | None = Field(None, description="each wrong field (at most 20); absent when "
                                                                "the problem is not one field's")
