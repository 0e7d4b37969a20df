"""The one narrow place that reads and writes kernel tunables in sysfs and procfs.

Every write returns a :class:`Change` holding the value before and after, so callers can record what they
touched and put it back exactly (:func:`restore`). Files that show a selection among choices, such as
``/sys/block/vda/queue/scheduler`` (``none [mq-deadline] kyber``) or THP's ``always [madvise] never``,
are recorded by their selected value, which is what has to be written back.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvmkit.errors import HostError, InvalidInput

PROC_SYS = Path("/proc/sys")
KSM_DIR = Path("/sys/kernel/mm/ksm")
HUGEPAGES_DIR = Path("/sys/kernel/mm/hugepages")
THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
NODE_DIR = Path("/sys/devices/system/node")
CPU_DIR = Path("/sys/devices/system/cpu")
BLOCK_DIR = Path("/sys/block")
MEMINFO = Path("/proc/meminfo")
MOUNTS = Path("/proc/mounts")

_SYSCTL_KEY = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_-]+)+$")
_CHOICE = re.compile(r"\[([^\]]+)\]")


@dataclass
class Change:
    """One tunable kvmkit wrote: its path, the value before, and the value written."""

    path: str
    before: str
    after: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        return cls(path=str(data["path"]), before=str(data["before"]), after=str(data["after"]))


def exists(path: str | Path) -> bool:
    return Path(path).exists()


def read(path: str | Path) -> str:
    """The stripped content of a sysfs/procfs file; HostError naming the file when it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except FileNotFoundError as err:
        raise HostError(f"{path} does not exist on this kernel",
                        hint="the feature is not built into this kernel or the device is gone") from err
    except OSError as err:
        raise HostError(f"cannot read {path}: {err.strerror}", hint="run kvmkit as root") from err


def read_int(path: str | Path) -> int:
    text = read(path)
    try:
        return int(text.split()[0])
    except (ValueError, IndexError) as err:
        raise HostError(f"{path} holds {text!r}, expected a number") from err


def choice(text: str) -> tuple[str, list[str]]:
    """``'none [mq-deadline] kyber'`` -> ``('mq-deadline', ['none', 'mq-deadline', 'kyber'])``."""
    match = _CHOICE.search(text)
    options = [w.strip("[]") for w in text.split()]
    return (match.group(1) if match else text.strip()), options


def read_choice(path: str | Path) -> tuple[str, list[str]]:
    return choice(read(path))


def current(path: str | Path) -> str:
    """The value to record before a write: the selected choice for choice files, else the content."""
    text = read(path)
    return choice(text)[0] if _CHOICE.search(text) else text


def write(path: str | Path, value: str | int) -> Change:
    """Write ``value`` to a tunable and return the change (before/after). Errors name the file."""
    path = Path(path)
    before = current(path)
    text = str(value)
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except FileNotFoundError as err:
        raise HostError(f"{path} does not exist on this kernel") from err
    except PermissionError as err:
        raise HostError(f"cannot write {path}: permission denied",
                        hint="run kvmkit as root (and not inside a read-only /sys)") from err
    except OSError as err:
        if err.errno in (errno.EINVAL, errno.ERANGE):
            raise InvalidInput(f"the kernel refused {text!r} for {path}: {err.strerror}",
                               hint="check the allowed values for this setting") from err
        raise HostError(f"cannot write {text!r} to {path}: {err.strerror}") from err
    return Change(str(path), before, text)


def restore(changes: list[Change]) -> list[Change]:
    """Write every change's ``before`` value back, newest first; returns the writes done."""
    done: list[Change] = []
    for change in reversed(changes):
        if current(change.path) != change.before:
            done.append(write(change.path, change.before))
    return done


def sysctl_path(key: str) -> Path:
    """``vm.dirty_ratio`` -> ``/proc/sys/vm/dirty_ratio`` (refusing names that could leave /proc/sys)."""
    if not _SYSCTL_KEY.match(key):
        raise InvalidInput(f"{key!r} is not a sysctl name", hint="use dotted names like vm.dirty_ratio")
    return PROC_SYS.joinpath(*key.split("."))


def checked_sysfs_path(path: str) -> Path:
    """A path a profile may write: absolute, under /sys, no '..'."""
    p = Path(path)
    if not p.is_absolute() or ".." in p.parts or p.parts[:2] != ("/", "sys"):
        raise InvalidInput(f"{path!r} is not a /sys path", hint="sysfs entries must be absolute paths under /sys")
    return p


def meminfo() -> dict[str, int]:
    """/proc/meminfo as {field: value}; values in kB except the HugePages_* counts."""
    out: dict[str, int] = {}
    for line in read(MEMINFO).splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key.strip()] = int(parts[0])
    return out


def node_meminfo(node: int) -> dict[str, int]:
    """/sys/devices/system/node/nodeN/meminfo as {field: kB}."""
    out: dict[str, int] = {}
    for line in read(NODE_DIR / f"node{node}" / "meminfo").splitlines():
        # "Node 0 MemTotal:        4810956 kB"
        head, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[head.split()[-1]] = int(parts[0])
    return out


def mounts_of_type(fstype: str) -> list[str]:
    """Mount points of a file system type (e.g. hugetlbfs)."""
    found = []
    for line in read(MOUNTS).splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[2] == fstype:
            found.append(fields[1])
    return found


def listdir(path: str | Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
