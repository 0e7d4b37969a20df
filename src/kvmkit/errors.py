"""The errors kvmkit raises. Every one names what was wrong and, where there is one, how to fix it.

The CLI prints ``error: <message>`` (and the hint) and exits non-zero; the API maps ``http_status``.
"""

from __future__ import annotations


class KvmkitError(Exception):
    """Base class: a user-facing failure with an optional one-line fix hint."""

    http_status = 400
    code = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def to_dict(self) -> dict[str, str | None]:
        return {"error": self.message, "hint": self.hint, "code": self.code}


class InvalidInput(KvmkitError):
    """A spec, flag or body field is invalid."""

    code = "invalid"
    http_status = 422


class NotFound(KvmkitError):
    code = "not_found"
    http_status = 404


class Conflict(KvmkitError):
    """The object exists already, is in use, or another operation holds it."""

    code = "conflict"
    http_status = 409


class InvalidState(KvmkitError):
    """The operation is not valid in the object's current state (e.g. suspend a shut-off VM)."""

    code = "invalid_state"
    http_status = 409


class HostError(KvmkitError):
    """The host is missing something (a daemon, a package, a permission)."""

    code = "host"
    http_status = 503


class OperationFailed(KvmkitError):
    """libvirt, QEMU or a host tool refused the operation."""

    code = "failed"
    http_status = 500
