"""One-line messages for pydantic validation errors: name the field and say what is expected."""

from __future__ import annotations

from typing import Any


def describe(exc: Any) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return str(exc), None
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "__root__") or "input"
    msg = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    extra = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"invalid {loc}: {msg}{extra}", "fix that value and run the command again"
