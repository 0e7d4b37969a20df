"""Opening what is imported, refusing whatever is unsafe or broken before anything is made.

The kind of the source is read from its bytes, never guessed from its name: a tar (``ustar`` at 257) is
an OVA, XML with an ``<Envelope>`` an OVF descriptor, anything else a disk image whose format
:func:`kvmkit.images.qemu_img.probe_format` reads from the header.

An OVA is read as a plain tar and never unpacked: every member must be a regular file with a plain name
(no directory part, no '..', no absolute path: no symlinks, hard links, devices or directories), the
descriptor is its first member, the data of every member lies inside the file, and the archive ends with
tar's end-of-archive blocks (else it was truncated). A manifest (``.mf``) is checked when present (SHA-1 or
SHA-256 of each file it lists). The disks are read in place (qemu-img opens them at their offset in the
tar). An OVF next to its disk files may name only files in its own directory, not through symlinks.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kvmkit.errors import InvalidInput, NotFound
from kvmkit.images import qemu_img
from kvmkit.service.v2v.ovf import OvfDisk, OvfSystem, read_ovf

BLOCK = 512
_MF_LINE = re.compile(r"^\s*(SHA1|SHA256|SHA512)\s*\((?P<name>[^)]+)\)\s*=\s*(?P<digest>[0-9a-fA-F]+)\s*$")
_KNOWN_OTHER = [  # (offset, magic, what) for files that are not disks kvmkit reads
    (0, b"\x1f\x8b", "gzip-compressed data"), (0, b"\xfd7zXZ\x00", "xz-compressed data"),
    (0, b"\x28\xb5\x2f\xfd", "zstd-compressed data"), (0, b"BZh", "bzip2-compressed data"),
    (0, b"PK\x03\x04", "a zip archive"), (0, b"7z\xbc\xaf\x27\x1c", "a 7-zip archive"),
    (0, b"QED\x00", "a QED image"), (0, b"WithoutFreeSpace", "a Parallels image"),
    (0, b"WithouFreSpacExt", "a Parallels image"), (0, b"LUKS\xba\xbe", "a LUKS-encrypted volume"),
    (0, b"Bochs Virtual HD Image", "a Bochs image"),
]


@dataclass
class DiskSource:
    label: str              # how errors name it: "disk1.vmdk in web.ova"
    path: Path              # the host file holding it
    offset: int             # where it starts in ``path``
    size: int               # its bytes in ``path``
    format: str             # read from its header
    ovf: OvfDisk | None = None

    @property
    def whole_file(self) -> bool:
        return self.offset == 0 and self.size == self.path.stat().st_size

    @property
    def span(self) -> int | None:
        """The bytes qemu-img reads it as: its size rounded up to the 512-byte tar block (QEMU's raw layer takes
        whole sectors; a tar pads each member to a block, so these bytes are the member's own), None for a
        whole file."""
        return None if self.whole_file else -(-self.size // BLOCK) * BLOCK

    def qemu_source(self) -> str:
        return qemu_img.untrusted_source(self.path, offset=self.offset, size=self.span)


@dataclass
class Package:
    kind: str               # ova | ovf | disk
    path: Path
    system: OvfSystem | None
    disks: list[DiskSource]
    manifest: str | None = None          # checked | none
    notes: list[str] = field(default_factory=list)


def open_source(path: str | Path, *, progress: Callable[[str], None] | None = None) -> Package:
    """Read and check the package or disk at ``path``; InvalidInput naming the problem when it is refused."""
    say = progress or (lambda _m: None)
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError as err:
        raise NotFound(f"{p} does not exist", hint="give the path of an .ova, .ovf or disk image") from err
    if not stat.S_ISREG(st.st_mode):
        raise InvalidInput(f"{p} is not a regular file", hint="give the path of an .ova, .ovf or disk image")
    p = p.resolve()
    with p.open("rb") as fh:
        head = fh.read(8192)
    if len(head) >= 262 and head[257:262] == b"ustar":
        say(f"reading the OVA package {p.name}")
        return _open_ova(p, st.st_size, say)
    if _looks_like_ovf(head):
        return _open_ovf(p)
    return Package("disk", p, None, [_disk(p, 0, st.st_size, p.name, None)])


def peek_name(path: Path) -> str | None:
    """The VirtualSystem name of the OVA/OVF at ``path`` (None for a disk), reading the descriptor only."""
    with path.open("rb") as fh:
        head = fh.read(8192)
    if len(head) >= 262 and head[257:262] == b"ustar":
        try:
            with tarfile.open(path, mode="r:") as tar:
                first = tar.next()
                if first is None or not first.isreg() or not first.name.lower().endswith(".ovf"):
                    return None
                data = _read_member(path, first)
        except tarfile.TarError as err:
            raise InvalidInput(f"{path.name} is not a readable tar (OVA): {err}",
                               hint="the package is damaged or truncated; copy or export it again") from err
        return read_ovf(data, path.name).name
    if _looks_like_ovf(head):
        return read_ovf(path.read_bytes()[:4 * 1024 * 1024 + 1], path.name).name
    return None


def _looks_like_ovf(head: bytes) -> bool:
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return text.startswith(b"<") and b"Envelope" in head


def check_member_name(name: str, where: str) -> str:
    """A file name inside a package: plain, no directory part (a leading './' is dropped)."""
    clean = name[2:] if name.startswith("./") else name
    if (not clean or clean.startswith("/") or "\\" in clean or "\x00" in clean or "/" in clean
            or clean in (".", "..") or ".." in clean.split("/")):
        raise InvalidInput(f"{where} names the file {name!r}, which is not a plain file name inside the package "
                           "(absolute, '..' or in a directory); refused",
                           hint="a package may only name its own files; export the VM again")
    return clean


def _open_ova(p: Path, size: int, say: Callable[[str], None]) -> Package:
    members: dict[str, tarfile.TarInfo] = {}
    order: list[str] = []
    try:
        with tarfile.open(p, mode="r:") as tar:
            while True:
                member = tar.next()
                if member is None:
                    break
                name = check_member_name(member.name, p.name)
                if not member.isreg() or member.issparse():
                    kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk() else
                            "a directory" if member.isdir() else "a sparse file" if member.issparse() else
                            "a device or special file")
                    raise InvalidInput(f"{p.name}: member {member.name!r} is {kind}; refused (an OVA holds only "
                                       "plain files)", hint="export the VM again as an OVA")
                if member.offset_data + member.size > size:
                    raise InvalidInput(f"{p.name} is truncated: {name} needs {member.size} bytes but the file "
                                       f"ends {member.offset_data + member.size - size} bytes short",
                                       hint="copy the whole package again (compare its size with the source)")
                if name in members:
                    raise InvalidInput(f"{p.name} holds {name} twice; refused", hint="export the VM again")
                members[name] = member
                order.append(name)
            end = tar.offset
    except tarfile.TarError as err:
        raise InvalidInput(f"{p.name} is not a readable tar (OVA): {err}",
                           hint="the package is damaged or truncated; copy or export it again") from err
    _check_end_of_archive(p, end, size)
    if not order:
        raise InvalidInput(f"{p.name} is an empty tar", hint="give an OVA with an .ovf descriptor and disks")
    if not order[0].lower().endswith(".ovf"):
        raise InvalidInput(f"{p.name}: the first file of an OVA must be its .ovf descriptor (it is {order[0]})",
                           hint="repack it with the .ovf first: tar cf NEW.ova VM.ovf [VM.mf] DISK...")
    descriptors = [n for n in order if n.lower().endswith(".ovf")]
    if len(descriptors) > 1:
        raise InvalidInput(f"{p.name} holds {len(descriptors)} .ovf descriptors; import one VM at a time")
    ovf_name = order[0]
    data = _read_member(p, members[ovf_name])
    system = read_ovf(data, f"{ovf_name} in {p.name}")
    manifest = None
    mf = [n for n in order if n.lower().endswith(".mf")]
    if mf:
        say(f"checking the manifest {mf[0]}")
        _check_manifest(p, members, mf[0])
        manifest = "checked"
    disks = []
    for ref in system.disks:
        name = check_member_name(ref.href, f"{ovf_name} in {p.name}")
        _refuse_packed(ref, name)
        member = members.get(name)
        if member is None:
            raise InvalidInput(f"{ovf_name} names the disk file {name}, which {p.name} does not hold (a truncated "
                               "or incomplete package?)", hint="copy or export the whole package again")
        disks.append(_disk(p, member.offset_data, member.size, f"{name} in {p.name}", ref))
    if not disks:
        raise InvalidInput(f"{ovf_name} in {p.name} describes no disk", hint="nothing to import")
    return Package("ova", p, system, disks, manifest=manifest or "none")


def _check_end_of_archive(p: Path, end: int, size: int) -> None:
    with p.open("rb") as fh:
        fh.seek(end)
        tail = fh.read(2 * BLOCK)
    if len(tail) < 2 * BLOCK or tail.strip(b"\x00"):
        raise InvalidInput(f"{p.name} is truncated: the tar stops without its end-of-archive marker",
                           hint="copy the whole package again (compare its size with the source)")


def _read_member(p: Path, member: tarfile.TarInfo, limit: int = 4 * 1024 * 1024) -> bytes:
    if member.size > limit:
        raise InvalidInput(f"{member.name} in {p.name} is {member.size} bytes; a descriptor is a few kilobytes")
    with p.open("rb") as fh:
        fh.seek(member.offset_data)
        return fh.read(member.size)


def _check_manifest(p: Path, members: dict[str, tarfile.TarInfo], mf_name: str) -> None:
    text = _read_member(p, members[mf_name]).decode("utf-8", errors="replace")
    for line in text.splitlines():
        if not line.strip():
            continue
        m = _MF_LINE.match(line)
        if not m:
            raise InvalidInput(f"{mf_name} in {p.name} has a line kvmkit cannot read: {line[:80]!r}",
                               hint="a manifest line reads SHA256(FILE)= HEX")
        name = check_member_name(m.group("name").strip(), f"{mf_name} in {p.name}")
        member = members.get(name)
        if member is None:
            raise InvalidInput(f"{mf_name} lists {name}, which {p.name} does not hold (truncated package?)",
                               hint="copy or export the whole package again")
        digest = hashlib.new(m.group(1).lower())
        with p.open("rb") as fh:
            fh.seek(member.offset_data)
            left = member.size
            while left:
                chunk = fh.read(min(left, 4 * 1024 * 1024))
                if not chunk:
                    break
                digest.update(chunk)
                left -= len(chunk)
        if digest.hexdigest() != m.group("digest").lower():
            raise InvalidInput(f"{name} in {p.name} does not match its {m.group(1)} digest in {mf_name} (damaged "
                               "or changed)", hint="copy or export the package again")


def _refuse_packed(ref: OvfDisk, name: str) -> None:
    if ref.compression:
        raise InvalidInput(f"disk file {name} is {ref.compression}-compressed inside the package; kvmkit reads "
                           "uncompressed disks", hint="export without compression (ovftool --compress=0), or "
                                                      "unpack and decompress it and import the disk")
    if ref.chunked:
        raise InvalidInput(f"disk file {name} is split into chunks (ovf:chunkSize); kvmkit reads whole files",
                           hint="export without --chunkSize")


def _open_ovf(p: Path) -> Package:
    if p.stat().st_size > 4 * 1024 * 1024:
        raise InvalidInput(f"{p.name} is too large for an OVF descriptor")
    system = read_ovf(p.read_bytes(), p.name)
    base = p.parent
    disks = []
    for ref in system.disks:
        name = check_member_name(ref.href, p.name)
        _refuse_packed(ref, name)
        disk_path = base / name
        try:
            st = os.lstat(disk_path)
        except FileNotFoundError as err:
            raise InvalidInput(f"{p.name} names the disk file {name}, which is not next to it in {base}",
                               hint="put the disk files in the descriptor's directory") from err
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            raise InvalidInput(f"{p.name}: disk file {name} is a symbolic link or not a regular file; refused",
                               hint="copy the disk file itself next to the descriptor")
        if disk_path.resolve().parent != base:
            raise InvalidInput(f"{p.name}: disk file {name} is outside the descriptor's directory; refused")
        disks.append(_disk(disk_path, 0, st.st_size, name, ref))
    if not disks:
        raise InvalidInput(f"{p.name} describes no disk", hint="nothing to import")
    return Package("ovf", p, system, disks, manifest="none")


def _disk(path: Path, offset: int, size: int, label: str, ref: OvfDisk | None) -> DiskSource:
    with path.open("rb") as fh:
        fh.seek(offset)
        head = fh.read(512)
        fh.seek(offset + 0x8001)
        iso = fh.read(5) == b"CD001" and size > 0x8006
    if iso:
        raise InvalidInput(f"{label} is an ISO 9660 CD image, not a disk", hint="attach it to a VM with --cdrom ISO")
    for at, magic, what in _KNOWN_OTHER:
        if head[at:at + len(magic)] == magic:
            raise InvalidInput(f"{label} is {what}, not a disk image kvmkit can import",
                               hint="import a VMDK, VHD/VHDX, VDI, QCOW2 or raw disk, or an OVA/OVF package")
    fmt = qemu_img.probe_format(path, offset=offset, size=size)
    if fmt == "qcow2" and len(head) >= 8 and int.from_bytes(head[4:8], "big") not in (2, 3):
        raise InvalidInput(f"{label} is a qcow (version {int.from_bytes(head[4:8], 'big')}) image; kvmkit reads "
                           "qcow2 (versions 2 and 3)", hint="convert it first: qemu-img convert -f qcow -O qcow2")
    if ref is not None and ref.format and ref.format != fmt:
        raise InvalidInput(f"{label}: the descriptor says {ref.format}, but the file is {fmt} (read from its header)",
                           hint="the package is damaged or mislabelled; export the VM again")
    if fmt == "raw" and (size == 0 or size % BLOCK):
        raise InvalidInput(f"{label} is {size} bytes, not a whole number of 512-byte sectors: not a raw disk, and "
                           "no format kvmkit knows (VMDK, VHD/VHDX, VDI, QCOW2)",
                           hint="check the file; import a VMDK, VHD/VHDX, VDI, QCOW2 or raw disk, or an OVA/OVF")
    return DiskSource(label=label, path=path, offset=offset, size=size, format=fmt, ovf=ref)
