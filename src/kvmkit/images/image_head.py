"""The first bytes of an image that arrives as a stream (an upload through the API), checked before any of
it is written anywhere.

A streamed image cannot be handed to ``qemu-img info`` before it is stored, so what
:func:`kvmkit.images.qemu_img.inspect_untrusted` refuses for a file is refused here from the header
itself (QEMU's docs/interop/qcow2.txt): a format other than the declared one (kvmkit's own magic probe),
a qcow2 header naming a backing file (offset 8), the external-data-file feature (incompatible feature bit
2) or a data-file header extension (0x44415441). The virtual size (offset 24) gives a new volume its
capacity. Once stored, the file is inspected again with qemu-img (service/storage/streams.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kvmkit.errors import InvalidInput
from kvmkit.images.qcow2_header import MAGIC as QCOW2_MAGIC
from kvmkit.images.qemu_img import FORMATS, probe_bytes

PROBE_BYTES = 512          # what the magic probe looks at
HEAD_MAX = 2 * 1024 ** 2   # qcow2 header extensions end before the first cluster boundary (clusters <= 2 MiB)
_DATA_FILE_EXT = 0x44415441
_INCOMPAT_DATA_FILE = 1 << 2
_MAX_EXTENSIONS = 64
_FLATTEN = "flatten it first: qemu-img convert -f qcow2 -O qcow2 SRC FLAT.qcow2"


@dataclass(frozen=True)
class Head:
    format: str
    virtual_size: int | None  # qcow2: the disk size its header states; raw: None (the byte count is the size)


def bytes_needed(head: bytes) -> int:
    """How many bytes from the start of the image :func:`inspect_head` needs to decide: read until the head
    holds this many (or the image ends). Above :data:`HEAD_MAX` the image is refused."""
    if len(head) < 4 or head[:4] != QCOW2_MAGIC:
        return PROBE_BYTES
    if len(head) < 104:
        return 104
    version = struct.unpack_from(">I", head, 4)[0]
    pos = 72 if version == 2 else struct.unpack_from(">I", head, 100)[0]
    for _ in range(_MAX_EXTENSIONS):
        if pos + 8 > len(head):
            return pos + 8
        kind, length = struct.unpack_from(">II", head, pos)
        if kind == 0:
            return max(pos + 8, PROBE_BYTES)
        pos += 8 + ((length + 7) & ~7)
    return pos


def inspect_head(head: bytes, declared: str, what: str = "the image") -> Head:
    """Refuse ``head`` (the image's first :func:`bytes_needed` bytes, or all of it when shorter) unless it
    is a self-contained image of the ``declared`` format; return its format and virtual size."""
    if declared not in FORMATS:
        raise InvalidInput(f"unknown image format '{declared}'", hint=f"use one of: {', '.join(FORMATS)}")
    found = probe_bytes(head[:PROBE_BYTES])
    if found != declared:
        raise InvalidInput(f"{what} is a {found} image, not {declared}",
                           hint=f"declare the format it has (format={found}) or convert it first")
    if declared == "raw":
        return Head("raw", None)
    if len(head) < 72:
        raise InvalidInput(f"{what} is too short to be a qcow2 image ({len(head)} bytes)",
                           hint="upload the whole image file")
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    if version not in (2, 3):
        raise InvalidInput(f"{what} has qcow2 version {version}; only versions 2 and 3 exist",
                           hint="upload a valid qcow2 image (qemu-img check SRC)")
    if backing_offset:
        end = backing_offset + min(backing_size, 1023)
        name = head[backing_offset:end].decode(errors="replace") if end <= len(head) else "a file"
        raise InvalidInput(f"{what} names a backing file ({name}); refused", hint=_FLATTEN)
    virtual = struct.unpack_from(">Q", head, 24)[0]
    if version == 2:
        return Head("qcow2", virtual)
    if len(head) < 104:
        raise InvalidInput(f"{what} is too short to be a qcow2 version 3 image", hint="upload the whole image file")
    incompatible = struct.unpack_from(">Q", head, 72)[0]
    if incompatible & _INCOMPAT_DATA_FILE:
        raise InvalidInput(f"{what} names an external data file; refused",
                           hint="convert it to a self-contained image first")
    pos = struct.unpack_from(">I", head, 100)[0]
    for _ in range(_MAX_EXTENSIONS):
        if pos + 8 > len(head):
            raise InvalidInput(f"{what}: its qcow2 header extensions do not end within the first "
                               f"{min(len(head), HEAD_MAX)} bytes", hint="upload a valid qcow2 image")
        kind, length = struct.unpack_from(">II", head, pos)
        if kind == 0:
            return Head("qcow2", virtual)
        if kind == _DATA_FILE_EXT:
            name = head[pos + 8:pos + 8 + min(length, 1023)].decode(errors="replace")
            raise InvalidInput(f"{what} names an external data file ({name}); refused",
                               hint="convert it to a self-contained image first")
        pos += 8 + ((length + 7) & ~7)
    raise InvalidInput(f"{what} has more than {_MAX_EXTENSIONS} qcow2 header extensions",
                       hint="upload a valid qcow2 image")
