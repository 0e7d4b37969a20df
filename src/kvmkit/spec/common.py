"""Validation shared by every spec: names, sizes, CPU lists.

Each function raises :class:`kvmkit.errors.InvalidInput` naming the field and saying how to fix it.
Pydantic validators wrap them with :func:`as_value_error` so that pydantic reports the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from kvmkit.errors import InvalidInput

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SIZE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_CPUSET_RE = re.compile(r"^\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")

# Suffix -> bytes. Bare numbers are MiB (like virt-install's --memory); sizes are binary (1G = 1 GiB).
# libvirt's convention (as virsh vol-create-as): K/KiB = 1024, KB = 1000; likewise M, G, T.
_UNITS = {
    "": None, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
    "t": 1024**4, "tib": 1024**4, "tb": 1000**4,
}
_SIZE_HINT = "use a number with an optional unit K, M, G or T (e.g. 512M, 1G, 1GiB; a bare number is MiB)"


def parse_size_bytes(value: str | int, what: str = "size") -> int:
    """'512M', '1G', '1GiB', '10G' -> bytes; a bare number ('2048' or 2048) means MiB."""
    if isinstance(value, bool):
        raise InvalidInput(f"{what}: {value!r} is not a size", hint=_SIZE_HINT)
    if isinstance(value, int):
        if value <= 0:
            raise InvalidInput(f"{what}: {value} must be positive", hint=_SIZE_HINT)
        return value * 1024**2
    match = _SIZE_RE.match(str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise InvalidInput(f"{what}: {value!r} is not a size", hint=_SIZE_HINT)
    number, unit = float(match.group(1)), match.group(2).lower()
    factor = _UNITS[unit] or 1024**2
    size = int(number * factor)
    if size <= 0:
        raise InvalidInput(f"{what}: {value!r} must be positive", hint=_SIZE_HINT)
    return size


def parse_size_mib(value: str | int, what: str = "size") -> int:
    """Like :func:`parse_size_bytes` but in MiB; refuses sizes that are not whole MiB."""
    size = parse_size_bytes(value, what)
    if size % 1024**2:
        raise InvalidInput(f"{what}: {value!r} is not a whole number of MiB", hint="use M or G units, e.g. 512M")
    return size // 1024**2


def validate_name(name: str, what: str = "name") -> str:
    """Check a VM/volume/network name: 1-64 characters of letters, digits, '.', '_' and '-'."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        shown = name if isinstance(name, str) and len(name) <= 70 else f"{str(name)[:20]}... ({len(str(name))} chars)"
        raise InvalidInput(
            f"invalid {what} {shown!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def validate_cpuset(value: str, what: str = "cpuset") -> str:
    """A libvirt CPU list such as '0-3', '0,2', '0-7,^3'."""
    value = value.strip()
    if not _CPUSET_RE.match(value):
        raise InvalidInput(f"invalid {what} {value!r}", hint="use a CPU list like 0-3 or 0,2,4 or 0-7,^3")
    return value


def validate_mac(value: str, what: str = "mac") -> str:
    mac = value.strip().lower().replace("-", ":")
    if not MAC_RE.match(mac):
        raise InvalidInput(f"invalid {what} {value!r}", hint="use six hex pairs, e.g. 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"invalid {what} {value!r}: a multicast address", hint="the first byte must be even")
    return mac


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def validate_text(value: str, what: str, *, single_line: bool = False, max_len: int = 4096) -> str:
    """Free text that goes into XML: no control characters (XML cannot hold them), bounded length."""
    if _XML_BAD.search(value) or (single_line and ("\n" in value or "\r" in value)):
        raise InvalidInput(f"{what} contains control characters or line breaks",
                           hint="use printable text" + (" on one line" if single_line else ""))
    if len(value) > max_len:
        raise InvalidInput(f"{what} is {len(value)} characters long", hint=f"keep it under {max_len}")
    return value


T = TypeVar("T")


def as_value_error(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call a validator; turn InvalidInput into ValueError so pydantic attaches the field name."""
    try:
        return fn(*args, **kwargs)
    except InvalidInput as err:
        text = f"{err.message}; {err.hint}" if err.hint else err.message
        raise ValueError(text) from err
