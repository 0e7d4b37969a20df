"""libvirt's security records on files: find the stale ones, clear them, say exactly what changed.

When libvirt's DAC driver (with ``remember_owner``, the default) gives a file to the QEMU user for a VM,
it records in extended attributes of the file who owned it before and how many VMs use it::

    trusted.libvirt.security.dac            "+0:+0"        the owner to give back (uid:gid)
    trusted.libvirt.security.ref_dac        "2"            how many running VMs hold the file
    trusted.libvirt.security.timestamp_dac  "1796589817"   the host's boot time when it was recorded

(SELinux keeps ``selinux``/``ref_selinux``/``timestamp_selinux`` the same way.) Each VM stop counts
down and the last one gives the file back. A record no running VM holds is stale: libvirt never counts
it down, so the file stays the QEMU user's, and a copy of it (or the file after an owner change) makes
libvirt refuse every VM: "Setting different DAC user or group on FILE which is already in use".

This module works on files only; which files running VMs use is the caller's to say (kvmkit's service
layer asks libvirt). Clearing takes the same lock libvirt takes while it relabels (a POSIX write lock on
byte 1 of the file) and re-reads the record under it, so a VM starting meanwhile is never robbed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ATTR_PREFIX = "trusted.libvirt.security."
LOCK_WAIT_S = 5.0
LOCK_OFFSET, LOCK_LEN = 1, 1  # the byte libvirt write-locks (POSIX lock) around a relabel


BOOT_TIME_SLACK_S = 2  # libvirtd computes the boot time as now - /proc/uptime when it starts: +-1 s


def boot_time() -> int | None:
    """The host's boot time (``btime`` of /proc/stat), what libvirt writes into timestamp_* give or take
    BOOT_TIME_SLACK_S."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def parse_owner(label: str | None) -> tuple[int, int] | None:
    """``"+64055:+64055"`` (libvirt's spelling of numeric ids) -> (64055, 64055); None if not numeric."""
    if not label or ":" not in label:
        return None
    user, group = label.split(":", 1)
    try:
        return int(user.removeprefix("+")), int(group.removeprefix("+"))
    except ValueError:
        return None


def owner_text(owner: tuple[int, int] | None) -> str | None:
    return None if owner is None else f"{owner[0]}:{owner[1]}"


def readable_as(path: str, owner: tuple[int, int] | None) -> bool:
    """Whether a process running as ``owner`` (uid, gid; the QEMU user) can read the regular file ``path``
    as it is, by its permission bits alone: every directory above it searchable, the file readable.
    Supplementary groups are not considered (a False only means libvirt relabels the file as before)."""
    if owner is None:
        return False

    def allowed(st: os.stat_result, need: int) -> bool:  # need: 4 read, 1 search
        if st.st_uid == owner[0]:
            return bool(st.st_mode >> 6 & need)
        if st.st_gid == owner[1]:
            return bool(st.st_mode >> 3 & need)
        return bool(st.st_mode & need)

    try:
        real = Path(os.path.realpath(path))
        st = real.stat()
        if not stat.S_ISREG(st.st_mode) or not allowed(st, 4):
            return False
        return all(allowed(parent.stat(), 1) for parent in real.parents)
    except OSError:
        return False


@dataclass(frozen=True)
class LabelRecord:
    """The libvirt security attributes of one file, as found."""

    path: str
    attrs: dict[str, str]
    owner: tuple[int, int]  # the file's current uid, gid

    def models(self) -> list[str]:
        names = {a.removeprefix(ATTR_PREFIX) for a in self.attrs}
        return sorted({n.removeprefix("ref_").removeprefix("timestamp_") for n in names})

    def refs(self, model: str = "dac") -> int | None:
        value = self.attrs.get(f"{ATTR_PREFIX}ref_{model}")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None

    def remembered_owner(self) -> tuple[int, int] | None:
        """The owner libvirt would give the file back (DAC), if it recorded one."""
        return parse_owner(self.attrs.get(f"{ATTR_PREFIX}dac"))

    def this_boot(self, model: str = "dac") -> bool:
        """Recorded since the host last booted (older records libvirt discards itself on next use)."""
        stamp, booted = self.attrs.get(f"{ATTR_PREFIX}timestamp_{model}"), boot_time()
        try:
            return stamp is not None and booted is not None and abs(int(stamp) - booted) <= BOOT_TIME_SLACK_S
        except ValueError:
            return False

    def summary(self) -> str:
        parts = [f"ref_{m}={self.refs(m)}" for m in self.models() if self.refs(m) is not None]
        remembered = self.remembered_owner()
        if remembered is not None:
            parts.append(f"original owner {owner_text(remembered)}")
        parts.append(f"owner now {owner_text(self.owner)}")
        if not self.this_boot():
            parts.append("recorded before the last host boot")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "attributes": {k.removeprefix(ATTR_PREFIX): v for k, v in self.attrs.items()},
                "owner": owner_text(self.owner), "remembered_owner": owner_text(self.remembered_owner()),
                "refs": self.refs(), "this_boot": self.this_boot()}


def _attrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in os.listxattr(path):
        if name.startswith(ATTR_PREFIX):
            with contextlib.suppress(OSError):
                out[name] = os.getxattr(path, name).decode(errors="replace")
    return out


def read_record(path: str) -> LabelRecord | None:
    """The file's libvirt records, or None when it has none (or cannot be read)."""
    try:
        attrs = _attrs(path)
        if not attrs:
            return None
        st = os.stat(path)
    except OSError:
        return None
    return LabelRecord(path, attrs, (st.st_uid, st.st_gid))


def files_under(roots: Iterable[str]) -> Iterator[str]:
    """Regular files below each root, as resolved paths (a root is resolved once; symbolic links below it
    are not followed); a root may itself be a file."""
    for root in roots:
        real = os.path.realpath(root)
        if os.path.isfile(real):
            yield real
            continue
        stack = [real]
        while stack:
            try:
                entries = os.scandir(stack.pop())
            except OSError:
                continue
            with entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            yield entry.path


def scan(paths: Iterable[str]) -> tuple[list[LabelRecord], int]:
    """(records found on ``paths``, how many distinct files were looked at). ``paths`` must be resolved
    (files_under's are): libvirt keeps its records on the file a path resolves to."""
    seen: set[str] = set()
    found: list[LabelRecord] = []
    for path in paths:
        if path in seen:
            continue
        seen.add(path)
        rec = read_record(path)
        if rec is not None:
            found.append(rec)
    return found, len(seen)


@dataclass
class Held:
    """A file with records that running VMs use: never touched."""

    path: str
    vms: list[str]
    refs: int | None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def split(records: Sequence[LabelRecord], in_use: Mapping[str, Sequence[str]]) -> tuple[list[LabelRecord], list[Held]]:
    """(stale records: no running VM uses the file, records of files running VMs use)."""
    stale: list[LabelRecord] = []
    held: list[Held] = []
    for rec in records:
        users = in_use.get(rec.path)
        if users:
            held.append(Held(rec.path, sorted(users), rec.refs()))
        else:
            stale.append(rec)
    return stale, held


@dataclass
class Cleared:
    """What clearing one file's records changed (or, in a dry run, would change)."""

    path: str
    removed: dict[str, str] = field(default_factory=dict)  # attribute (without the prefix) -> old value
    owner_before: str | None = None
    owner_after: str | None = None  # set only when the owner was (or would be) given back
    skipped: str | None = None      # why nothing was changed

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@contextlib.contextmanager
def _relabel_lock(path: str) -> Iterator[bool]:
    """Hold the lock libvirt holds while it relabels ``path``; yields False if it stays taken LOCK_WAIT_S."""
    try:
        st = os.stat(path)
    except OSError:
        yield False
        return
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        yield True  # nothing libvirt's relabelling would lock
        return
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, LOCK_LEN, LOCK_OFFSET)
                break
            except OSError as err:
                if err.errno not in (errno.EACCES, errno.EAGAIN) or time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # closing drops the lock


def clear(rec: LabelRecord, *, relabelled_owner: tuple[int, int] | None, dry_run: bool = False) -> Cleared:
    """Remove ``rec``'s attributes from its file; give the file back to its recorded original owner when it
    is still owned by ``relabelled_owner`` (the QEMU user libvirt gave it to: what libvirt's last
    restore would have done). An owner someone set since is left alone. Nothing changes if the record
    changed since it was read (a VM started using the file meanwhile) or libvirt holds the file's lock."""
    result = Cleared(rec.path, {k.removeprefix(ATTR_PREFIX): v for k, v in rec.attrs.items()},
                     owner_text(rec.owner))
    give_back = rec.remembered_owner()
    if give_back == rec.owner or relabelled_owner is None or rec.owner != relabelled_owner:
        give_back = None
    if dry_run:
        result.owner_after = owner_text(give_back)
        return result
    with _relabel_lock(rec.path) as locked:
        if not locked:
            return Cleared(rec.path, skipped="libvirt holds the file's relabel lock (a VM is starting or stopping)")
        now = read_record(rec.path)
        if now is None or now.attrs != rec.attrs or now.owner != rec.owner:
            return Cleared(rec.path, skipped="the record changed while repairing (a VM started or stopped using "
                                             "the file): left to libvirt")
        if give_back is not None:
            os.chown(rec.path, *give_back)
            result.owner_after = owner_text(give_back)
        for name in rec.attrs:
            try:
                os.removexattr(rec.path, name)
            except OSError as err:
                if err.errno not in (errno.ENODATA, errno.ENOENT):
                    raise
    return result
