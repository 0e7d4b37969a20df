"""Choose the guest type: ``kvm`` when /dev/kvm really runs a guest, else ``qemu`` (TCG).

/dev/kvm can exist and still hang every guest kernel (nested KVM on some clouds), so kvmkit boots the
micro-guest once under ``-accel kvm`` with a short timeout and caches the verdict per host kernel
and QEMU binary (``kvmkit host check --refresh`` probes again). This probe is the one place kvmkit
starts QEMU itself: it is not a VM, it is a hardware test that must not go through libvirt's
domain bookkeeping.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

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


def choose_virt_type(requested: str | None = None) -> tuple[str, str]:
    """Return (virt_type, why). ``requested`` (kvm|qemu) overrides the probe."""
    if requested in ("kvm", "qemu"):
        return requested, f"--virt-type {requested} was requested"
    forced = os.environ.get("KVMKIT_VIRT_TYPE")
    if forced in ("kvm", "qemu"):
        return forced, f"KVMKIT_VIRT_TYPE={forced}"
    verdict = probe_kvm()
    if verdict.usable:
        return "kvm", verdict.reason
    return "qemu", f"KVM not usable: {verdict.reason}; using TCG (software emulation)"
