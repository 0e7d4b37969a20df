"""The base of every typed answer of the API, and the one way to document a free JSON value.

``Out`` models describe what the service functions return. In production a field a service adds before
its model knows it is left out of the answer (the document stays the contract); with
``KVMKIT_STRICT_RESPONSES=1`` (set by the API tests) such a field fails the response instead (a 500 naming
the model and the field), so the tests, which exercise real answers, catch a model that lags behind its
service. The answer's shape is the same either way: strictness only adds the check.

A value whose shape depends on something else (a task's ``result`` depends on its ``kind``; a journal
step's data on the step) is declared with :func:`json_value`: its schema carries ``x-kvmkit-json`` and a
description saying where its shape is documented. tests/api/test_openapi_typed.py accepts an untyped
schema only with that mark.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

STRICT_ENV = "KVMKIT_STRICT_RESPONSES"
JSON_MARK = "x-kvmkit-json"


def strict() -> bool:
    """Whether answers are checked for fields their model does not declare (read at each check: cheap)."""
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


class UndeclaredField(ValueError):
    pass


OUT_MODELS: set[str] = set()  # names of the Out models: a ValidationError of one is the server's fault (500)


class Out(BaseModel):
    """An answer (or a part of one): extra keys are dropped, or refused under KVMKIT_STRICT_RESPONSES."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        OUT_MODELS.add(cls.__name__)

    @model_validator(mode="before")
    @classmethod
    def _declared_only(cls, data: Any) -> Any:
        if isinstance(data, dict) and strict():
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = sorted(str(k) for k in data if k not in known)
            if unknown:
                raise UndeclaredField(f"{cls.__module__}.{cls.__name__} does not declare {', '.join(unknown)} "
                                      "(the service returns it): add the field(s) to the model")
        return data


def json_value(description: str, **extra: Any) -> Any:
    """A field holding any JSON value, documented (``x-kvmkit-json``) with where its shape is described."""
    return Field(None, description=description, json_schema_extra={JSON_MARK: True, **extra})
