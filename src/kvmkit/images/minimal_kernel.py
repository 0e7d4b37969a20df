"""A minimal x86_64 guest kernel built from Debian's linux-source package, for micro-guests that boot fast.

Debian's cloud kernel spends ~1.5 s under TCG before /init (alternatives patching, certificates, crypto
self-tests, ftrace, kprobes ...). This one is ``make tinyconfig`` plus :data:`CONFIG_FRAGMENT`
(``minimal_kernel.config``): everything the micro-guest's /init uses is built in (no modules), PVH entry
included so QEMU can boot the uncompressed ELF ``vmlinux`` directly; ``bzImage`` (lz4) is built too.

Steps: ``apt-get download linux-source-<series>`` (cached by package version), unpack the tarball, apply the
fragment with scripts/kconfig/merge_config.sh, check every option landed, ``make -j$(nproc)``. Results are
cached under ``<data>/cache/minimal-kernel/<key>`` where the key hashes (source version, fragment, format).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from kvmkit.config import cache_dir
from kvmkit.errors import HostError, OperationFailed
from kvmkit.images.debian_kernel import KernelTree
from kvmkit.images.plain_copy import copy_file
from kvmkit.images.publish import publish

SOURCE_PACKAGE = "linux-source-6.1"
CONFIG_FRAGMENT = "minimal_kernel.config"
FORMAT_VERSION = 1  # bump when the build steps change
# Debian packages the build needs (command or file that proves each one is there).
BUILD_DEPS = {"patch": "patch", "make": "make", "gcc": "gcc", "bc": "bc", "bison": "bison", "flex": "flex",
              "libelf-dev": "/usr/include/libelf.h", "libssl-dev": "/usr/include/openssl/ssl.h",
              "lz4": "lz4", "xz-utils": "xz", "perl": "perl", "cpio": "cpio"}
EXPECTED_STEPS = 1300  # about how many CC/LD/AR lines a build prints; only for the progress estimate

Progress = Callable[[str, float], None]  # (stage, percent of the whole build)


@dataclass(frozen=True)
class MinimalKernel:
    """A built kernel: ``vmlinux`` (ELF, PVH entry) and ``bzImage`` (lz4) of the same build."""

    vmlinux: str
    bzimage: str
    config: str
    source_version: str
    kernel_release: str
    key: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _root() -> Path:
    return cache_dir("minimal-kernel")


def _run(cmd: list[str], *, cwd: Path | None = None, what: str, hint: str) -> str:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise HostError(f"{cmd[0]} not found (needed to {what})", hint=hint) from err
    if res.returncode != 0:
        tail = (res.stderr.strip() or res.stdout.strip())[-800:]
        raise OperationFailed(f"{what} failed: {tail}", hint=hint)
    return res.stdout


def patches() -> dict[str, str]:
    """The patches applied to Debian's source, by file name (``minimal_kernel-*.patch`` in this package)."""
    files = resources.files("kvmkit.images")
    return {f.name: f.read_text() for f in sorted(files.iterdir(), key=lambda f: f.name)
            if f.name.startswith("minimal_kernel-") and f.name.endswith(".patch")}


def _patch(src: Path, text: str, *args: str) -> bool:
    res = subprocess.run(["patch", "-p1", "-s", "-f", *args], cwd=src, input=text, capture_output=True, text=True,
                         check=False)
    return res.returncode == 0


def apply_patches(src: Path, wanted: dict[str, str]) -> None:
    """Make the source tree carry exactly ``wanted``: reverse patches applied earlier that are no longer
    wanted (recorded in .kvmkit-patches.json), apply the missing ones. Idempotent."""
    record = src / ".kvmkit-patches.json"
    applied: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
    hint = "the source package changed: refresh the patch, or delete the cached source and rebuild"
    for name, text in applied.items():
        if wanted.get(name) != text and _patch(src, text, "-R", "--dry-run") and not _patch(src, text, "-R"):
            raise OperationFailed(f"cannot take patch {name} out of {src} again", hint=hint)
    for name, text in wanted.items():
        if _patch(src, text, "-R", "--dry-run"):
            continue  # already applied
        if not _patch(src, text, "-N", "--dry-run") or not _patch(src, text, "-N"):
            raise OperationFailed(f"patch {name} does not apply to {src}", hint=hint)
    record.write_text(json.dumps(wanted, indent=2))


def fragment_text() -> str:
    return resources.files("kvmkit.images").joinpath(CONFIG_FRAGMENT).read_text()


def fragment_options(text: str | None = None) -> dict[str, str]:
    """CONFIG_X -> value ("y", "n", a number or a quoted string) as the fragment asks for them."""
    options: dict[str, str] = {}
    for line in (fragment_text() if text is None else text).splitlines():
        match = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line.strip())
        if match:
            options[match.group(1)] = match.group(2)
    return options


def missing_options(config_text: str, wanted: dict[str, str]) -> list[str]:
    """Options of ``wanted`` that the final .config does not have as asked (Kconfig dropped them)."""
    have: dict[str, str] = {}
    for line in config_text.splitlines():
        match = re.match(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$", line)
        if match:
            have[match.group(1)] = match.group(2)
    bad = []
    for name, value in wanted.items():
        got = have.get(name, "n")
        if got != value:
            bad.append(f"{name}={value} (got {got})")
    return bad


def missing_build_deps() -> list[str]:
    return [pkg for pkg, probe in BUILD_DEPS.items()
            if not (Path(probe).exists() if probe.startswith("/") else shutil.which(probe))]


def ensure_build_deps(say: Callable[[str], None] = lambda _s: None) -> None:
    """apt-get install the build dependencies that are missing (only when a kernel is built)."""
    missing = missing_build_deps()
    if not missing:
        return
    say(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    res = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                         capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0 or missing_build_deps():
        raise HostError(f"could not install the kernel build dependencies {', '.join(missing)}: "
                        f"{res.stderr.strip()[-400:]}",
                        hint=f"run apt-get update, then apt-get install {' '.join(missing)}")


def candidate_version() -> str | None:
    """The version apt would download of the source package, or None when apt does not know it."""
    try:
        out = subprocess.run(["apt-cache", "policy", SOURCE_PACKAGE], capture_output=True, text=True,
                             check=False).stdout
    except FileNotFoundError:
        return None
    match = re.search(r"Candidate:\s*(\S+)", out)
    return match.group(1) if match and match.group(1) != "(none)" else None


def _source_dir(version: str) -> Path:
    return _root() / "source" / version


def cached_sources() -> list[str]:
    base = _root() / "source"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "Makefile").exists())


def fetch_source(*, refresh: bool = False, say: Callable[[str], None] = lambda _s: None) -> tuple[str, Path]:
    """(version, unpacked tree) of the kernel source: a cached one unless ``refresh`` or none is cached."""
    cached = cached_sources()
    if cached and not refresh:
        return cached[-1], _source_dir(cached[-1])
    version = candidate_version()
    if version is None:
        raise HostError(f"apt does not know {SOURCE_PACKAGE}",
                        hint="run apt-get update (kvmkit builds the minimal kernel from Debian's source package)")
    dest = _source_dir(version)
    if (dest / "Makefile").exists():
        return version, dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    hint = "check that the Debian mirror is reachable (apt-get update) and the disk has ~2 GiB free"
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        tmpdir = Path(tmp)
        say(f"apt-get download {SOURCE_PACKAGE} ({version})")
        _run(["apt-get", "download", f"{SOURCE_PACKAGE}={version}"], cwd=tmpdir,
             what=f"apt-get download {SOURCE_PACKAGE}", hint=hint)
        debs = sorted(tmpdir.glob("*.deb"))
        if not debs:
            raise HostError(f"apt-get download {SOURCE_PACKAGE} produced no .deb", hint=hint)
        say("unpack the kernel source")
        _run(["dpkg-deb", "-x", str(debs[0]), str(tmpdir / "deb")], what="dpkg-deb -x", hint=hint)
        tarballs = sorted((tmpdir / "deb" / "usr" / "src").glob("linux-source-*.tar.*"))
        if not tarballs:
            raise HostError(f"{debs[0].name} holds no usr/src/linux-source-*.tar.*", hint=hint)
        _run(["tar", "-x", "--no-same-owner", "-f", str(tarballs[0]), "-C", str(tmpdir)],
             what=f"tar -x {tarballs[0].name}", hint=hint)
        trees = [p for p in tmpdir.iterdir() if p.name.startswith("linux-source-") and p.is_dir()]
        if not trees:
            raise HostError(f"{tarballs[0].name} holds no linux-source-* directory", hint=hint)
        if dest.exists():
            shutil.rmtree(dest)
        trees[0].rename(dest)
    return version, dest


def cache_key(source_version: str, fragment: str | None = None, patch_texts: dict[str, str] | None = None) -> str:
    text = fragment_text() if fragment is None else fragment
    h = hashlib.sha256(f"v{FORMAT_VERSION}\n{SOURCE_PACKAGE} {source_version}\n{text}".encode())
    for name, body in sorted((patches() if patch_texts is None else patch_texts).items()):
        h.update(f"\n{name}\n{body}".encode())
    return h.hexdigest()[:16]


def cached(key: str) -> MinimalKernel | None:
    manifest = _root() / key / "manifest.json"
    if not manifest.exists():
        return None
    kernel = MinimalKernel(**json.loads(manifest.read_text()))
    return kernel if Path(kernel.vmlinux).exists() and Path(kernel.bzimage).exists() else None


def configure(src: Path, objdir: Path, fragment: Path) -> None:
    """tinyconfig + fragment + olddefconfig into ``objdir``; raise when Kconfig dropped an option."""
    hint = "edit src/kvmkit/images/minimal_kernel.config: an option's dependencies are not enabled"
    _run(["make", "-s", f"O={objdir}", "tinyconfig"], cwd=src, what="make tinyconfig", hint=hint)
    _run(["scripts/kconfig/merge_config.sh", "-m", "-O", str(objdir), str(objdir / ".config"), str(fragment)],
         cwd=src, what="merge_config.sh", hint=hint)
    _run(["make", "-s", f"O={objdir}", "olddefconfig"], cwd=src, what="make olddefconfig", hint=hint)
    bad = missing_options((objdir / ".config").read_text(), fragment_options(fragment.read_text()))
    if bad:
        raise OperationFailed(f"the kernel config does not have {', '.join(bad)}", hint=hint)


def compile_kernel(src: Path, objdir: Path, say: Progress) -> None:
    """make -j$(nproc) vmlinux bzImage, reporting an estimated percentage from the lines make prints."""
    cmd = ["nice", "-n", "10", "make", f"O={objdir}", f"-j{os.cpu_count() or 1}", "vmlinux", "bzImage"]
    tail: list[str] = []
    steps = 0
    proc = subprocess.Popen(cmd, cwd=src, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail[-29:], line.rstrip()]
        if re.match(r"^\s+(CC|LD|AR|AS|OBJCOPY)\s", line):
            steps += 1
            say("compile the kernel", min(99.0, 100.0 * steps / EXPECTED_STEPS))
    if proc.wait() != 0:
        raise OperationFailed("building the minimal kernel failed: " + " | ".join(tail[-8:])[-1200:],
                              hint=f"check the disk has ~2 GiB free; to build from scratch, remove {objdir}")


@contextmanager
def _build_lock() -> Iterator[None]:
    """One kernel build at a time (they share the object directory)."""
    with open(_root() / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(*, force: bool = False, refresh: bool = False,
          progress: Progress | None = None) -> MinimalKernel:
    """Build (or reuse the cached) minimal kernel. ``refresh`` asks apt for the newest source package.

    The object directory ``obj/<source version>`` is kept, so a changed fragment rebuilds only what it
    touches; ``force`` ignores the cached result and runs make again (delete the object directory to start
    from scratch)."""
    say: Progress = progress or (lambda _stage, _pct: None)
    version, src = fetch_source(refresh=refresh, say=lambda s: say(s, 0.0))
    fragment = fragment_text()
    wanted_patches = patches()
    key = cache_key(version, fragment, wanted_patches)
    if not force and (hit := cached(key)) is not None:
        return hit
    ensure_build_deps(lambda s: say(s, 0.0))
    dest = _root() / key
    objdir = _root() / "obj" / version
    with _build_lock():
        if not force and (hit := cached(key)) is not None:  # built by another process meanwhile
            return hit
        objdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=_root(), prefix=f"build-{key}-") as tmp:
            frag = Path(tmp) / CONFIG_FRAGMENT
            frag.write_text(fragment)
            say("configure the kernel", 0.0)
            apply_patches(src, wanted_patches)
            configure(src, objdir, frag)
            compile_kernel(src, objdir, say)
            release = _run(["make", "-s", f"O={objdir}", "kernelrelease"], cwd=src, what="make kernelrelease",
                           hint=f"the build tree is broken: remove {objdir} and build again").strip()
            out = Path(tmp) / key
            out.mkdir()
            copy_file(objdir / "vmlinux", out / "vmlinux")
            copy_file(objdir / "arch" / "x86" / "boot" / "bzImage", out / "bzImage")
            copy_file(objdir / ".config", out / "config")
            if not (objdir / "modules.builtin").exists():
                raise OperationFailed("the kernel build wrote no modules.builtin",
                                      hint=f"the build tree may be incomplete: remove {objdir} and build again")
            copy_file(objdir / "modules.builtin", out / "modules.builtin")
            kernel = MinimalKernel(str(dest / "vmlinux"), str(dest / "bzImage"), str(dest / "config"),
                                   version, release, key)
            publish(out, dest, kernel.to_dict())
        _prune(keep=key, version=version)
    say("done", 100.0)
    return kernel


def _prune(keep: str, version: str) -> None:
    """Drop results of older inputs, and sources and object directories of other source versions (micro
    images copy the kernel they use, so nothing points at them)."""
    old = [p for p in _root().iterdir() if p.name != keep and re.fullmatch(r"[0-9a-f]{16}", p.name)]
    for sub in ("source", "obj"):
        if (_root() / sub).is_dir():
            old += [p for p in (_root() / sub).iterdir() if p.name != version]
    for path in old:
        if path.is_symlink() or not path.is_dir():
            path.unlink(missing_ok=True)
        else:
            shutil.rmtree(path, ignore_errors=True)


def builtin_modules(kernel: MinimalKernel) -> set[str]:
    """Names (``virtio_net``, ``evdev`` ...) of the modules built into ``kernel``."""
    text = (Path(kernel.vmlinux).parent / "modules.builtin").read_text()
    return {Path(line).name.removesuffix(".ko").replace("-", "_") for line in text.split()}


def kernel_tree(kernel: MinimalKernel, *, boot: str = "bzImage") -> KernelTree:
    """``kernel`` laid out like an unpacked Debian kernel package (boot/vmlinuz-V, lib/modules/V with
    modules.builtin and no .ko files), so :func:`kvmkit.images.micro.build` can take it.

    ``boot``: "bzImage" (default: micro.build() then also extracts the PVH ``vmlinux`` from it, as for the
    cloud kernel) or "vmlinux" (the ELF itself as the image's only kernel)."""
    if boot not in ("vmlinux", "bzImage"):
        raise ValueError(f"boot must be vmlinux or bzImage, not {boot}")
    version = f"{kernel.kernel_release}-kvmkit-minimal-{kernel.key[:8]}-{boot.lower()}"
    root = Path(kernel.vmlinux).parent / "tree" / boot.lower()
    tree = KernelTree(version, root)
    if not (tree.vmlinuz.exists() and (tree.modules / "modules.builtin").exists()):
        tree.vmlinuz.parent.mkdir(parents=True, exist_ok=True)
        tree.modules.mkdir(parents=True, exist_ok=True)
        copy_file(Path(kernel.vmlinux).parent / "modules.builtin", tree.modules / "modules.builtin")
        copy_file(kernel.vmlinux if boot == "vmlinux" else kernel.bzimage, tree.vmlinuz).chmod(0o644)
    return tree
