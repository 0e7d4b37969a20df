"""qemu-img, with the image format always given explicitly (QEMU never probes a format).

Format probing is the root of several host-file-read CVEs (a raw image whose first bytes look like a
qcow2 header naming /etc/shadow as its backing file). kvmkit detects the format itself by reading the
header (:func:`probe_format`), then always passes ``-f``. Images from outside (uploads, imports) go
through :func:`inspect_untrusted`, which opens them with their backing chain cut off and refuses any
that name a backing file or an external data file, or whose format is not the declared one.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvmkit.errors import HostError, InvalidInput, NotFound, OperationFailed
from kvmkit.images.qcow2_header import MAGIC as QCOW2_MAGIC

QEMU_IMG = "qemu-img"
FORMATS = ("qcow2", "raw")  # formats kvmkit creates and converts to
READ_FORMATS = ("qcow2", "raw", "vmdk", "vpc", "vhdx", "vdi")  # formats kvmkit can read (convert from)

# (offset, magic, format): qcow2 'QFI\xfb'; VMDK sparse extents 'KDMV' (hosted) and 'COWD' (ESX); a dynamic VHD
# (QEMU's "vpc") starts with a copy of its 'conectix' footer; VHDX 'vhdxfile'; VDI's signature 0xbeda107f
# (little-endian) at 0x40, after the '<<< Oracle VM VirtualBox Disk Image >>>' text.
_MAGICS: list[tuple[int, bytes, str]] = [
    (0, QCOW2_MAGIC, "qcow2"),
    (0, b"KDMV", "vmdk"),
    (0, b"COWD", "vmdk"),
    (0, b"conectix", "vpc"),
    (0, b"vhdxfile", "vhdx"),
    (0x40, b"\x7f\x10\xda\xbe", "vdi"),
]
VMDK_DESCRIPTOR = b"# Disk DescriptorFile"   # a text VMDK: its data lives in other files (extents)
VPC_FOOTER = b"conectix"                    # a fixed VHD has no header, only this footer in its last 512 bytes


def check_format(fmt: str, allowed: tuple[str, ...] = FORMATS) -> str:
    """Return ``fmt`` if kvmkit supports it here, else raise InvalidInput listing the choices."""
    if fmt not in allowed:
        raise InvalidInput(f"unknown image format '{fmt}'", hint=f"use one of: {', '.join(allowed)}")
    return fmt


def _read_ends(path: Path, offset: int, size: int | None) -> tuple[bytes, bytes]:
    """The first 512 bytes of the image at ``offset`` in ``path`` and the last 512 (the image ends at
    ``offset + size``, else at the end of the file)."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            head = fh.read(512)
            end = offset + size if size is not None else os.fstat(fh.fileno()).st_size
            fh.seek(max(offset, end - 512))
            tail = fh.read(min(512, max(0, end - offset)))
    except FileNotFoundError as err:
        raise NotFound(f"image file {path} does not exist", hint="check the path") from err
    except IsADirectoryError as err:
        raise InvalidInput(f"{path} is a directory, not an image file") from err
    except PermissionError as err:
        raise HostError(f"cannot read {path}: permission denied", hint="run as root") from err
    return head, tail


def probe_format(path: str | Path, *, offset: int = 0, size: int | None = None) -> str:
    """Detect an image's format from its header bytes (kvmkit's own probe; QEMU never probes). ``offset`` and
    ``size`` locate an image inside a larger file (a disk in an OVA's tar)."""
    head, tail = _read_ends(Path(path), offset, size)
    return probe_bytes(head, tail)


def probe_bytes(head: bytes, tail: bytes = b"") -> str:
    """The format an image's first bytes (at least 512, or the whole image if shorter) say it has; ``tail``,
    its last 512 bytes when known, tells a fixed VHD (which has only a footer)."""
    for at, magic, fmt in _MAGICS:
        if head[at:at + len(magic)] == magic:
            return fmt
    if head.startswith(b"<<< ") and b"Disk Image" in head[:64]:
        return "vdi"
    if head.startswith(VMDK_DESCRIPTOR):
        return "vmdk"
    if len(tail) == 512 and (tail.startswith(VPC_FOOTER) or tail[1:].startswith(VPC_FOOTER)):
        return "vpc"  # fixed VHD (footer in the last 512 bytes; some old tools wrote 511)
    return "raw"


def is_vmdk_descriptor(path: str | Path, *, offset: int = 0) -> bool:
    head, _ = _read_ends(Path(path), offset, 512)
    return head.startswith(VMDK_DESCRIPTOR)


def _run(cmd: list[str], what: str) -> str:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise HostError("qemu-img not found", hint="apt-get install qemu-utils") from err
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip().replace("qemu-img: ", "")
        raise OperationFailed(f"{what}: {msg[-500:]}", hint="see qemu-img's message above")
    return res.stdout


def info(path: str | Path, fmt: str | None = None, *, chain: bool = False) -> dict[str, Any]:
    """``qemu-img info --output=json`` for a trusted image, format given explicitly (probed by kvmkit if None).

    With ``chain=True`` the result has ``backing_chain``: one info dict per image in the chain.
    """
    p = Path(path)
    fmt = fmt or probe_format(p)
    if not p.exists():
        raise NotFound(f"image file {p} does not exist", hint="check the path")
    cmd = [QEMU_IMG, "info", "--output=json", "-U", "-f", fmt]
    if chain:
        # qemu-img opens no backing file without --backing-chain; follow the chain only when every link
        # records its format (else qemu-img would probe it)
        top = json.loads(_run([*cmd, str(p)], f"qemu-img info {p}"))
        if top.get("backing-filename") and not top.get("backing-filename-format"):
            return {**top, "backing_chain": [], "backing_format_missing": True}
        cmd.append("--backing-chain")
    cmd.append(str(p))
    data = json.loads(_run(cmd, f"qemu-img info {p}"))
    if chain:
        images = data if isinstance(data, list) else [data]
        top = dict(images[0])
        top["backing_chain"] = images[1:]
        return top
    return data if isinstance(data, dict) else data[0]


def summary(data: dict[str, Any]) -> dict[str, Any]:
    """The fields kvmkit shows of an info dict: format, sizes, backing file and chain."""
    out = {
        "path": data.get("filename"),
        "format": data.get("format"),
        "virtual_size": data.get("virtual-size"),
        "actual_size": data.get("actual-size"),
        "backing_file": data.get("full-backing-filename") or data.get("backing-filename"),
        "backing_format": data.get("backing-filename-format"),
    }
    if "backing_chain" in data:
        out["backing_chain"] = [{"path": d.get("filename"), "format": d.get("format"),
                                 "virtual_size": d.get("virtual-size")} for d in data["backing_chain"]]
    return out


def untrusted_source(path: str | Path, *, offset: int = 0, size: int | None = None) -> str:
    """A ``json:`` image name for qemu-img (used with an explicit ``-f FORMAT``) that reads only ``path``
    (from ``offset``, ``size`` bytes: a disk inside an OVA's tar) and opens no backing file."""
    file: dict[str, Any] = {"driver": "file", "filename": str(Path(path).resolve())}
    if offset or size is not None:
        file = {"driver": "raw", "offset": offset, "file": file, **({"size": size} if size is not None else {})}
    return "json:" + json.dumps({"file": file, "backing": None})


def inspect_untrusted(path: str | Path, declared_fmt: str, *, formats: tuple[str, ...] = FORMATS,
                      offset: int = 0, size: int | None = None, label: str | None = None) -> dict[str, Any]:
    """Inspect an image from outside; refuse it if it names a backing or data file (or, for VMDK, extents in
    other files) or is not ``declared_fmt``.

    The image is opened through a ``json:`` description with its backing link cut (``"backing": null``),
    so QEMU reads no file but this one. ``formats``: the formats accepted (kvmkit's own by default; imports
    accept READ_FORMATS). ``offset``/``size``: the image is a part of ``path``; ``label`` names it in errors.
    """
    check_format(declared_fmt, formats)
    p = Path(path).resolve()
    name = label or p.name
    found = probe_format(p, offset=offset, size=size)
    if found != declared_fmt:
        raise InvalidInput(f"{name} is a {found} image, not {declared_fmt}",
                           hint=f"declare the format it has (--format {found}) or convert it first")
    if declared_fmt == "vmdk" and is_vmdk_descriptor(p, offset=offset):
        raise InvalidInput(f"{name} is a VMDK descriptor: its data lives in other files (extents); refused",
                           hint="export the disk as a single-file VMDK (monolithicSparse or streamOptimized, as "
                                "in an OVA), or convert it on the source host")
    src = untrusted_source(p, offset=offset, size=size)
    data = json.loads(_run([QEMU_IMG, "info", "--output=json", "-U", "-f", declared_fmt, src],
                           f"qemu-img info {name}"))
    if data.get("format") != declared_fmt:
        raise InvalidInput(f"{name} is a {data.get('format')} image, not {declared_fmt}")
    if data.get("backing-filename"):
        raise InvalidInput(f"{name} names a backing file ({data['backing-filename']}); refused",
                           hint=f"flatten it first: qemu-img convert -f {declared_fmt} -O qcow2 SRC FLAT.qcow2")
    specific = (data.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise InvalidInput(f"{name} names an external data file ({specific['data-file']}); refused",
                           hint="convert it to a self-contained image first")
    own_file = json.loads(src.removeprefix("json:"))["file"]

    def ours(extent: str | None) -> bool:  # the image itself, or the part of ``path`` it was opened at
        if extent in (data.get("filename"), str(p)):
            return True
        try:
            return bool(extent and extent.startswith("json:") and json.loads(extent[5:]) == own_file)
        except ValueError:
            return False

    others = [e.get("filename") for e in specific.get("extents") or [] if not ours(e.get("filename"))]
    if others:
        raise InvalidInput(f"{name} reads its data from other files ({', '.join(map(str, others))}); refused",
                           hint="export the disk as a single-file VMDK (monolithicSparse or streamOptimized)")
    if not data.get("virtual-size"):
        raise InvalidInput(f"{name} has no virtual size (an empty or broken {declared_fmt} image)")
    return data


def measure(src: str, src_fmt: str, dst_fmt: str = "qcow2") -> dict[str, int]:
    """``qemu-img measure``: bytes a conversion of ``src`` (a path or a :func:`untrusted_source` name) to
    ``dst_fmt`` needs ("required": the data the image holds; "fully-allocated")."""
    check_format(src_fmt, READ_FORMATS)
    check_format(dst_fmt)
    data = json.loads(_run([QEMU_IMG, "measure", "--output=json", "-f", src_fmt, "-O", dst_fmt, str(src)],
                           "qemu-img measure"))
    return {"required": int(data["required"]), "fully-allocated": int(data["fully-allocated"])}


def create(path: str | Path, fmt: str, size_bytes: int, backing: str | None = None,
           backing_fmt: str | None = None, *, preallocation: str | None = None) -> None:
    """Create an image; with ``backing``, ``backing_fmt`` is required (never probed)."""
    check_format(fmt)
    if backing and not backing_fmt:
        raise InvalidInput("a backing file needs its format", hint="pass backing_fmt='qcow2' or 'raw'")
    if size_bytes <= 0 and not backing:
        raise InvalidInput(f"image size must be positive, got {size_bytes}")
    cmd = [QEMU_IMG, "create", "-q", "-f", fmt]
    if backing:
        cmd += ["-b", str(backing), "-F", check_format(backing_fmt or "", FORMATS)]
    if preallocation:
        cmd += ["-o", f"preallocation={preallocation}"]
    cmd += [str(path)]
    if size_bytes > 0:
        cmd.append(str(size_bytes))
    try:
        _run(cmd, f"qemu-img create {path}")
    except OperationFailed:
        Path(path).unlink(missing_ok=True)
        raise


def resize(path: str | Path, fmt: str, size_bytes: int, *, shrink: bool = False) -> None:
    """``qemu-img resize -f FMT PATH SIZE`` (the image must not be in use); shrinking needs ``shrink``
    (``--shrink``: data past the new end is lost)."""
    check_format(fmt)
    if size_bytes <= 0:
        raise InvalidInput(f"image size must be positive, got {size_bytes}")
    if not Path(path).exists():
        raise NotFound(f"image file {path} does not exist", hint="check the path")
    cmd = [QEMU_IMG, "resize", "-q", "-f", fmt, *(["--shrink"] if shrink else []), str(path), str(size_bytes)]
    _run(cmd, f"qemu-img resize {path}")


_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


def convert(src: str | Path, dst: str | Path, src_fmt: str, dst_fmt: str,
            progress: Callable[[float], None] | None = None, *, existing: bool = False) -> None:
    """``qemu-img convert -p -f SRC_FMT -O DST_FMT``; ``progress(percent)`` as it goes. No partial ``dst``.

    ``src`` may be a :func:`untrusted_source` name (``json:...``): the image is read with its backing link
    cut, from inside a larger file if it says so. ``existing``: ``dst`` is a new, empty image made by its
    owner (a pool volume libvirt created): written into (``-n --target-is-zero``), left to the owner on failure."""
    check_format(src_fmt, READ_FORMATS)
    check_format(dst_fmt)
    json_src = isinstance(src, str) and src.startswith("json:")
    src, dst = (src if json_src else Path(src)), Path(dst)
    if not json_src and not Path(src).exists():
        raise NotFound(f"image file {src} does not exist", hint="check the path")
    if dst.exists() != existing:
        if existing:
            raise NotFound(f"{dst} does not exist", hint="create the target image first")
        raise InvalidInput(f"{dst} exists already", hint="choose a new file name or delete it first")
    cmd = [QEMU_IMG, "convert", "-p", "-f", src_fmt, "-O", dst_fmt, *(["-n", "--target-is-zero"] if existing else []),
           str(src), str(dst)]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as err:
        raise HostError("qemu-img not found", hint="apt-get install qemu-utils") from err
    assert proc.stdout is not None and proc.stderr is not None
    buf = b""
    try:
        while chunk := os.read(proc.stdout.fileno(), 256):
            buf = (buf + chunk)[-256:]
            matches = _PROGRESS.findall(buf)
            if matches and progress:
                progress(float(matches[-1]))
        errtext = proc.stderr.read().decode(errors="replace").strip()
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        if not existing:
            dst.unlink(missing_ok=True)
        raise
    if rc != 0:
        if not existing:
            dst.unlink(missing_ok=True)
        detail = errtext.replace("qemu-img: ", "")[-500:]
        raise OperationFailed(f"qemu-img convert {src} -> {dst} failed: {detail}")
    if progress:
        progress(100.0)
