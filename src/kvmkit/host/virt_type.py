"""Choose the guest type: ``kvm`` when /dev/kvm really runs a guest, else ``qemu`` (TCG) -- per host.

/dev/kvm can exist and still hang every guest kernel (nested KVM on some clouds), so kvmkit boots the
micro-guest once under ``-accel kvm`` with a short timeout and caches the verdict per host kernel
and QEMU binary (``kvmkit host check --refresh`` probes again). For the local host this probe is the
one place kvmkit starts QEMU itself: it is not a VM, it is a hardware test that must not go through
libvirt's domain bookkeeping.

Another host (a remote libvirt connection) is probed on that host, through its libvirt: first whether its
libvirt offers ``kvm`` guests at all (domain capabilities), then the same boot test as a transient,
auto-destroyed ``type='kvm'`` domain whose serial console is read over the connection. The verdict is
cached per host (its host UUID, libvirt and QEMU versions). Nothing about the local /dev/kvm says anything
about another host.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kvmkit.config import cache_dir

QEMU = "/usr/bin/qemu-system-x86_64"
PROBE_TIMEOUT_S = 8.0


@dataclass(frozen=True)
class KvmVerdict:
    usable: bool
    reason: str
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _cache_file() -> Path:
    return cache_dir() / "kvm-probe.json"


def _die_with_parent() -> None:
    """Run in the probe's child: if kvmkit dies mid-probe, the kernel kills the probe QEMU too."""
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _cache_key() -> str:
    qemu = Path(QEMU)
    qemu_stamp = f"{qemu.stat().st_mtime_ns}" if qemu.exists() else "none"
    return f"{platform.release()}|{qemu_stamp}"


def probe_kvm(*, refresh: bool = False) -> KvmVerdict:
    """Boot the micro-guest under KVM once (cached) and report whether it reached its ready marker."""
    if not os.path.exists("/dev/kvm"):
        return KvmVerdict(False, "/dev/kvm does not exist (no kvm module or no hardware virtualization)", 0.0)
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return KvmVerdict(False, "/dev/kvm is not accessible to this user", 0.0)
    if not Path(QEMU).exists():
        return KvmVerdict(False, f"{QEMU} not found (apt-get install qemu-system-x86)", 0.0)
    key = _cache_key()
    cache = _cache_file()
    if not refresh and (saved := _read_cache(cache, key)):
        return saved
    import fcntl

    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one probe at a time on this host; the others reuse its verdict
        if not refresh and (saved := _read_cache(cache, key)):
            return saved
        from kvmkit.images import micro

        image = micro.build()
        verdict = _boot_probe(image.kernel, image.initrd)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "verdict": verdict.to_dict()}))
        tmp.replace(cache)
    return verdict


def _read_cache(cache: Path, key: str) -> KvmVerdict | None:
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return KvmVerdict(**saved["verdict"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _boot_probe(kernel: str, initrd: str) -> KvmVerdict:
    cmd = [QEMU, "-accel", "kvm", "-m", "128", "-nodefaults", "-display", "none", "-no-reboot",
           "-serial", "stdio", "-kernel", kernel, "-initrd", initrd,
           "-append", "console=ttyS0 quiet panic=-1 kvmkit.probe=1"]
    start = time.monotonic()
    try:
        res = subprocess.run(cmd, capture_output=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        took = time.monotonic() - start
        if b"KVMKIT-GUEST-READY" in out:
            return KvmVerdict(True, "a guest booted under KVM (it did not power off in time)", took)
        return KvmVerdict(False, f"a guest kernel hangs under KVM (no ready marker in {PROBE_TIMEOUT_S:.0f} s; "
                          "nested virtualization?)", took)
    took = time.monotonic() - start
    if b"KVMKIT-GUEST-READY" in res.stdout:
        return KvmVerdict(True, f"a guest booted under KVM in {took:.1f} s", took)
    err = res.stderr.decode(errors="replace").strip().splitlines()
    return KvmVerdict(False, f"QEMU could not run a KVM guest: {err[-1] if err else 'no output'}", took)


def choose_virt_type(requested: str | None = None, conn: Any = None) -> tuple[str, str]:
    """Return (virt_type, why) for the host ``conn`` is connected to (None: this host). ``requested``
    (kvm|qemu) overrides the probe; KVMKIT_VIRT_TYPE overrides it for the local host only."""
    if requested in ("kvm", "qemu"):
        return requested, f"--virt-type {requested} was requested"
    if conn is not None and _is_remote(conn):
        verdict = probe_host(conn)
        if verdict.usable:
            return "kvm", verdict.reason
        return "qemu", f"KVM not usable: {verdict.reason}; using TCG (software emulation)"
    forced = os.environ.get("KVMKIT_VIRT_TYPE")
    if forced in ("kvm", "qemu"):
        return forced, f"KVMKIT_VIRT_TYPE={forced}"
    verdict = probe_kvm()
    if verdict.usable:
        return "kvm", verdict.reason
    return "qemu", f"KVM not usable: {verdict.reason}; using TCG (software emulation)"


# -- another host, through its libvirt ------------------------------------------------------------------

def _is_remote(conn: Any) -> bool:
    """A libvirt on another machine (a host in the URI); test:/// and local sockets are this machine's."""
    from urllib.parse import urlsplit

    uri = urlsplit(conn.getURI())
    return bool(uri.hostname) and uri.scheme.startswith("qemu")


def _host_key(conn: Any) -> tuple[str, str]:
    """(host UUID, cache key) of the host ``conn`` talks to: its UUID, libvirt and QEMU versions."""
    from lxml import etree

    caps = etree.fromstring(conn.getCapabilities().encode())
    host_uuid = caps.findtext("host/uuid") or conn.getHostname()
    return host_uuid, f"{host_uuid}|{conn.getLibVersion()}|{conn.getVersion()}"


def _host_label(conn: Any) -> str:
    try:
        return f"host {conn.getHostname()} ({conn.getURI()})"
    except Exception:
        return "the host"


def probe_host(conn: Any, *, refresh: bool = False) -> KvmVerdict:
    """Whether KVM runs guests on the host of ``conn`` (a remote connection), cached per host."""
    import fcntl

    import libvirt

    try:
        host_uuid, key = _host_key(conn)
    except libvirt.libvirtError as err:
        return KvmVerdict(False, f"cannot ask {_host_label(conn)}: {err.get_error_message()}", 0.0)
    cache = cache_dir() / f"kvm-probe-{host_uuid}.json"
    if not refresh and (saved := _read_cache(cache, key)):
        return saved
    with open(cache.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not refresh and (saved := _read_cache(cache, key)):
            return saved
        verdict = _probe_through_libvirt(conn)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "verdict": verdict.to_dict()}))
        tmp.replace(cache)
    return verdict


def _probe_through_libvirt(conn: Any) -> KvmVerdict:
    import libvirt

    label = _host_label(conn)
    start = time.monotonic()
    try:
        conn.getDomainCapabilities(None, "x86_64", None, "kvm")
    except libvirt.libvirtError as err:
        return KvmVerdict(False, f"libvirt on {label} offers no KVM guests: {err.get_error_message()}",
                          time.monotonic() - start)
    from kvmkit.images import micro

    image = micro.build()
    return _boot_probe_remote(conn, label, image.kernel, image.initrd)


def _boot_probe_remote(conn: Any, label: str, kernel: str, initrd: str) -> KvmVerdict:
    """Boot the micro-guest as a transient kvm domain on that host and read its console for the marker."""
    import secrets
    import threading

    import libvirt

    from kvmkit.xml.probe import kvm_probe_domain

    name = f"kvmkit-kvm-probe-{secrets.token_hex(4)}"
    xml = kvm_probe_domain(name, kernel, initrd, "console=ttyS0 quiet panic=-1 kvmkit.probe=1")
    start = time.monotonic()
    try:
        dom = conn.createXML(xml, libvirt.VIR_DOMAIN_START_AUTODESTROY)
    except libvirt.libvirtError as err:
        msg = err.get_error_message() or str(err)
        if kernel in msg or initrd in msg or "No such file" in msg:
            return KvmVerdict(True, f"libvirt on {label} offers KVM guests (not boot-tested: the micro-guest's "
                              "kernel is not on that host)", time.monotonic() - start)
        return KvmVerdict(False, f"QEMU on {label} could not start a KVM guest: {msg}", time.monotonic() - start)
    seen = threading.Event()
    out = bytearray()
    try:
        stream = conn.newStream(0)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)

        def read() -> None:  # blocking reads in a thread: non-blocking streams need an event loop
            try:
                while not seen.is_set():
                    data = stream.recv(4096)
                    if not data or not isinstance(data, bytes):
                        return
                    out.extend(data)
                    if b"KVMKIT-GUEST-READY" in out:
                        seen.set()
            except libvirt.libvirtError:
                return

        reader = threading.Thread(target=read, name="kvmkit-kvm-probe", daemon=True)
        reader.start()
        seen.wait(PROBE_TIMEOUT_S)
    finally:
        try:
            dom.destroy()  # ends the console stream too
        except libvirt.libvirtError:
            pass  # it powered off by itself
    took = time.monotonic() - start
    if seen.is_set():
        return KvmVerdict(True, f"a guest booted under KVM on {label} in {took:.1f} s", took)
    return KvmVerdict(False, f"a guest kernel hangs under KVM on {label} (no ready marker in "
                      f"{PROBE_TIMEOUT_S:.0f} s; nested virtualization?)", took)
