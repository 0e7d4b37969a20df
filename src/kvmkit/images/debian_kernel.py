"""Fetch and unpack a Debian kernel package (linux-image-cloud-amd64) for guests that boot directly.

Uses the host's apt (``apt-get download`` + ``dpkg-deb -x``); unpacked trees are cached by version.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kvmkit.config import cache_dir
from kvmkit.errors import HostError

META_PACKAGE = "linux-image-cloud-amd64"


@dataclass(frozen=True)
class KernelTree:
    version: str  # e.g. 6.1.0-56-cloud-amd64
    root: Path  # the unpacked package

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    try:
        res = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as err:
        raise HostError(f"{cmd[0]} not found", hint="kvmkit builds guest kernels with apt on Debian/Ubuntu") from err
    except subprocess.CalledProcessError as err:
        raise HostError(f"{' '.join(cmd)} failed: {err.stderr.strip()[-400:]}",
                        hint="check that the Debian package mirror is reachable (apt-get update)") from err
    return res.stdout


def resolve_package(meta: str = META_PACKAGE) -> str:
    """The concrete linux-image package the meta package currently depends on."""
    out = _run(["apt-cache", "depends", meta])
    match = re.search(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if not match:
        _run(["apt-get", "update", "-qq"])
        out = _run(["apt-cache", "depends", meta])
        match = re.search(r"Depends: (linux-image-[0-9][^\s]*)", out)
    if not match:
        raise HostError(f"apt does not know {meta}", hint="run apt-get update; kvmkit needs Debian's kernel packages")
    return match.group(1)


def cached_kernels() -> list[KernelTree]:
    """Kernels already unpacked in the cache, oldest first."""
    trees = []
    for path in cache_dir("kernels").iterdir():
        tree = KernelTree(path.name, path)
        if path.is_dir() and tree.vmlinuz.exists() and tree.modules.exists():
            trees.append(tree)
    return sorted(trees, key=lambda t: [int(p) if p.isdigit() else p for p in re.split(r"[.-]", t.version)])


def fetch_kernel(meta: str = META_PACKAGE, *, refresh: bool = False) -> KernelTree:
    """The cloud kernel: the newest one already unpacked in the cache, unless ``refresh`` (or none is cached)
    asks apt for the current package, downloads and unpacks it. Cached kernels make builds work offline."""
    if not refresh:
        cached = cached_kernels()
        if cached:
            return cached[-1]
    package = resolve_package(meta)
    version = package.removeprefix("linux-image-").removesuffix("-unsigned")
    dest = cache_dir("kernels") / version
    tree = KernelTree(version, dest)
    if tree.vmlinuz.exists() and tree.modules.exists():
        return tree
    with tempfile.TemporaryDirectory(dir=cache_dir("kernels")) as tmp:
        tmpdir = Path(tmp)
        _run(["apt-get", "download", package], cwd=tmpdir)
        debs = sorted(tmpdir.glob("*.deb"))
        if not debs:
            raise HostError(f"apt-get download {package} produced no .deb")
        unpacked = tmpdir / "root"
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
        if dest.exists():
            shutil.rmtree(dest)
        unpacked.rename(dest)
    if not tree.vmlinuz.exists():
        raise HostError(f"{package} has no boot/vmlinuz-{version}")
    tree.vmlinuz.chmod(0o644)
    return tree
