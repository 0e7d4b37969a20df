"""Copying files without their extended attributes: the one way kvmkit copies a file.

libvirt's DAC driver keeps, in ``trusted.libvirt.security.*`` extended attributes of every file it
relabels for a running VM, the file's original owner and how many VMs use it (``ref_dac``). A copy that
carries those attributes (``shutil.copy2`` and ``copystat`` copy them) claims that VMs use the new file:
libvirt then counts on from there and, the copy being owned by root and not by the QEMU user, refuses to
start any VM from it ("Setting different DAC user or group on ... which is already in use").

:func:`copy_file` copies the contents (and, when asked, permission bits and times) into a new inode, so
no attribute of an older file at the destination survives either.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

StrPath = str | os.PathLike[str]


def copy_file(src: StrPath, dst: StrPath, *, metadata: bool = True) -> Path:
    """Copy ``src`` to the file ``dst`` without extended attributes; returns ``dst``.

    ``metadata``: also copy the permission bits and access/modification times (what ``shutil.copy2``
    copies, minus the extended attributes); without it the new file gets the default mode (umask).
    The copy is written next to ``dst`` and renamed over it: readers never see half a file, and an
    existing ``dst`` is replaced by a new inode instead of being overwritten in place (which would keep
    its attributes)."""
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.copy-{os.getpid()}")
    try:
        shutil.copyfile(src, tmp)
        if metadata:
            shutil.copymode(src, tmp)
            st = os.stat(src)
            os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dst
