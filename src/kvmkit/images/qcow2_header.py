"""A qcow2 image's backing chain read from its headers, without starting qemu-img.

Checks that walk every disk on the host (is this file the base of a linked clone?) would otherwise start
one ``qemu-img info --backing-chain`` per disk, ~20-40 ms each: seconds on a host with a hundred VMs.
The header says what is needed in a few hundred bytes (docs/interop/qcow2.txt in QEMU's tree): the
backing file name (offset 8: its offset u64, offset 16: its length u32) and, in a header extension, the
backing file's format. Only what the headers state for certain is answered; anything else (not a qcow2
file, a backing name that is a protocol or ``json:`` string, no recorded backing format) returns None,
and the caller asks qemu-img as before.
"""

from __future__ import annotations

import os
import struct

MAGIC = b"QFI\xfb"
_BACKING_FORMAT_EXT = 0xE2792ACA
_MAX_NAME = 1023  # QEMU refuses longer backing file names
_MAX_EXTENSIONS = 64
_MAX_DEPTH = 64


def backing_files(path: str) -> list[str] | None:
    """The files below the qcow2 image ``path`` in its backing chain, top first ([] when it has none),
    or None when the headers cannot tell for certain."""
    chain: list[str] = []
    current = path
    for _ in range(_MAX_DEPTH):
        try:
            name, fmt = _backing(current)
        except (OSError, ValueError, UnicodeDecodeError, struct.error):
            return None
        if name is None:
            return chain
        if fmt is None or name.startswith("json:") or ":" in name.split("/", 1)[0]:
            return None
        below = name if os.path.isabs(name) else os.path.join(os.path.dirname(current), name)
        chain.append(below)
        if fmt == "raw":
            return chain
        if fmt != "qcow2":
            return None
        current = below
    return None


def _backing(path: str) -> tuple[str | None, str | None]:
    """(backing file name or None, its recorded format or None) from one qcow2 header."""
    with open(path, "rb") as f:
        head = f.read(104)
        if head[:4] != MAGIC:
            raise ValueError(f"{path} is not a qcow2 image")
        version, offset, size = struct.unpack_from(">IQI", head, 4)
        if offset == 0:
            return None, None
        if size > _MAX_NAME:
            raise ValueError(f"{path}: backing file name of {size} bytes")
        header_length = 72 if version == 2 else struct.unpack_from(">I", head, 100)[0]
        f.seek(offset)
        name = f.read(size).decode()
        fmt = None
        f.seek(header_length)
        for _ in range(_MAX_EXTENSIONS):
            ext = f.read(8)
            if len(ext) < 8:
                break
            kind, length = struct.unpack(">II", ext)
            if kind == 0:
                break
            data = f.read((length + 7) & ~7)
            if kind == _BACKING_FORMAT_EXT:
                fmt = data[:length].decode()
        return name, fmt
