"""Validation shared by every spec: names, sizes, CPU lists.

Each function raises :class:`kvmkit.errors.InvalidInput` naming the field and saying how to fix it.
Pydantic validators wrap them with :func:`as_value_error` so that pydantic reports the field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from kvmkit.errors import InvalidInput

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SIZE_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
_CPUSET_RE = re.compile(r"^\^?\d+(-\d+)?(,\^?\d+(-\d+)?)*$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")  # a host network interface (bridge, NIC): IFNAMSIZ 16

# Upper bounds checked when a spec is parsed, so that a VM libvirt or QEMU would refuse (or a number
# that overflows on the way) fails up front with a 422 / one-line error instead of later in a task.
MAX_MEMORY_MIB = 16 * 1024 * 1024        # 16 TiB: above what x86 QEMU machines address
MAX_DISK_BYTES = 64 * 1024**4            # 64 TiB per disk (qcow2 with default clusters holds 256 TiB)
MAX_DISKS = 64
MAX_NICS = 32
MAX_VCPUS = 4096                          # QEMU's q35 limit with x2APIC
MAX_SIZE_BYTES = 2**63 - 1               # nothing in libvirt's API holds more

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
        if value > MAX_SIZE_BYTES // 1024**2:
            raise InvalidInput(f"{what}: {_short(value)} MiB is far too large", hint=_SIZE_HINT)
        return value * 1024**2
    if not isinstance(value, str) or len(value) > 64:
        raise InvalidInput(f"{what}: {_short(value)} is not a size", hint=_SIZE_HINT)
    match = _SIZE_RE.fullmatch(value)
    if not match or match.group(2).lower() not in _UNITS:
        raise InvalidInput(f"{what}: {_short(value)} is not a size", hint=_SIZE_HINT)
    number, unit = float(match.group(1)), match.group(2).lower()
    factor = _UNITS[unit] or 1024**2
    if not math.isfinite(number) or number * factor > MAX_SIZE_BYTES:
        raise InvalidInput(f"{what}: {_short(value)} is far too large", hint=_SIZE_HINT)
    size = int(number * factor)
    if size <= 0:
        raise InvalidInput(f"{what}: {_short(value)} must be positive", hint=_SIZE_HINT)
    return size


def _short(value: object) -> str:
    """A value for an error message: repr'd (escapes control characters and surrogates), at most 40 chars."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}... ({len(text)} chars)"


def check_max(value: int, limit: int, what: str, unit: str, hint: str) -> int:
    if value > limit:
        raise InvalidInput(f"{what} {value} {unit} is above the limit of {limit} {unit}", hint=hint)
    return value


def parse_size_mib(value: str | int, what: str = "size") -> int:
    """Like :func:`parse_size_bytes` but in MiB; refuses sizes that are not whole MiB."""
    size = parse_size_bytes(value, what)
    if size % 1024**2:
        raise InvalidInput(f"{what}: {value!r} is not a whole number of MiB", hint="use M or G units, e.g. 512M")
    return size // 1024**2


def validate_name(name: str, what: str = "name") -> str:
    """Check a VM/volume/network name: 1-64 characters of letters, digits, '.', '_' and '-'."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name) if isinstance(name, str) and len(name) <= 70 else _short(name)
        raise InvalidInput(
            f"invalid {what} {shown}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def validate_cpuset(value: str, what: str = "cpuset") -> str:
    """A libvirt CPU list such as '0-3', '0,2', '0-7,^3'."""
    value = value.strip()
    if not _CPUSET_RE.fullmatch(value):
        raise InvalidInput(f"invalid {what} {value!r}", hint="use a CPU list like 0-3 or 0,2,4 or 0-7,^3")
    return value


def validate_mac(value: str, what: str = "mac") -> str:
    mac = value.strip().lower().replace("-", ":")
    if not MAC_RE.fullmatch(mac):
        raise InvalidInput(f"invalid {what} {value!r}", hint="use six hex pairs, e.g. 52:54:00:12:34:56")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(f"invalid {what} {value!r}: a multicast address", hint="the first byte must be even")
    return mac


_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


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
