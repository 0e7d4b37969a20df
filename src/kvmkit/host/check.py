"""``kvmkit host check``: is this host ready to run VMs? Like virt-host-validate plus the seeds' manual checks.

Each check returns pass / warn / fail with a one-line fix hint; a host is ready when nothing fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    hint: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def check_cpu_flags() -> Check:
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    if "vmx" in flags:
        return Check("cpu_virtualization", PASS, "Intel VT-x (vmx) present")
    if "svm" in flags:
        return Check("cpu_virtualization", PASS, "AMD-V (svm) present")
    return Check("cpu_virtualization", WARN, "no vmx/svm CPU flag: hardware virtualization is off or hidden",
                 "enable VT-x/AMD-V in the BIOS (or nested virtualization on the outer hypervisor); TCG still works")


def check_kvm_modules() -> Check:
    loaded = [m for m in ("kvm", "kvm_intel", "kvm_amd") if Path(f"/sys/module/{m}").exists()]
    if "kvm" in loaded and len(loaded) > 1:
        return Check("kvm_modules", PASS, "loaded: " + ", ".join(loaded))
    if Path("/dev/kvm").exists():
        return Check("kvm_modules", PASS, "/dev/kvm present (kvm built in or loaded on the host)")
    return Check("kvm_modules", WARN, "kvm modules not loaded", "modprobe kvm_intel (or kvm_amd)")


def check_kvm_device() -> Check:
    dev = Path("/dev/kvm")
    if not dev.exists():
        return Check("kvm_device", WARN, "/dev/kvm missing: guests will use TCG", "modprobe kvm_intel (or kvm_amd)")
    import grp

    st = dev.stat()
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    if group == "kvm" and st.st_mode & 0o060 == 0o060:
        return Check("kvm_device", PASS, "/dev/kvm present, group kvm read/write")
    return Check("kvm_device", WARN, f"/dev/kvm is {group}:{oct(st.st_mode & 0o777)}: the qemu user cannot open it, "
                 "so libvirt re-probes QEMU on every define (slow)",
                 "chgrp kvm /dev/kvm && chmod 0660 /dev/kvm (what udev does; scripts/setup.sh does it)")


def check_kvm_usable() -> Check:
    from kvmkit.host.virt_type import probe_kvm

    verdict = probe_kvm()
    if verdict.usable:
        return Check("kvm_usable", PASS, f"{verdict.reason}; guests use KVM")
    return Check("kvm_usable", WARN, f"{verdict.reason}; guests will use TCG (virt type qemu, much slower)",
                 "use a host with working KVM for production guests")


def check_libvirtd(uri: str) -> Check:
    from kvmkit.errors import HostError
    from kvmkit.hypervisor.connection import connect

    try:
        conn = connect(uri)
    except HostError as err:
        return Check("libvirtd", FAIL, err.message, err.hint)
    try:
        ver = conn.getLibVersion()
        hv = conn.getVersion()
        detail = (f"{uri} answers: libvirt {ver // 1000000}.{ver // 1000 % 1000}.{ver % 1000}, "
                  f"{conn.getType()} {hv // 1000000}.{hv // 1000 % 1000}.{hv % 1000}")
    finally:
        conn.close()
    return Check("libvirtd", PASS, detail)


def check_virtlogd() -> Check:
    if Path("/run/libvirt/virtlogd-sock").exists():
        return Check("virtlogd", PASS, "virtlogd socket present")
    return Check("virtlogd", FAIL, "virtlogd is not running (QEMU guests cannot start without it)",
                 "start it: virtlogd -d (or systemctl start virtlogd)")


def check_qemu() -> Check:
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        return Check("qemu", FAIL, "qemu-system-x86_64 not found", "apt-get install qemu-system-x86")
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    match = re.search(r"version ([0-9.]+)", out)
    return Check("qemu", PASS, f"{qemu} {match.group(1) if match else out.strip()}")


def check_qemu_img() -> Check:
    if shutil.which("qemu-img"):
        return Check("qemu_img", PASS, "qemu-img present")
    return Check("qemu_img", FAIL, "qemu-img not found", "apt-get install qemu-utils")


def _check_default(uri: str, kind: str) -> Check:
    from kvmkit.errors import HostError
    from kvmkit.hypervisor.connection import connect

    name = f"default_{kind}"
    try:
        conn = connect(uri)
    except HostError:
        return Check(name, FAIL, "libvirtd unreachable", "see the libvirtd check")
    try:
        import libvirt

        try:
            obj = conn.networkLookupByName("default") if kind == "network" else conn.storagePoolLookupByName("default")
        except libvirt.libvirtError:
            return Check(name, FAIL, f"no '{kind} default' defined", "run: kvmkit host prepare")
        active, autostart = obj.isActive(), obj.autostart()
    finally:
        conn.close()
    if active and autostart:
        return Check(name, PASS, f"{kind} 'default' active, autostart on")
    return Check(name, WARN, f"{kind} 'default' active={bool(active)} autostart={bool(autostart)}",
                 "run: kvmkit host prepare")


def check_ksm() -> Check:
    ksm = Path("/sys/kernel/mm/ksm/run")
    if not ksm.exists():
        return Check("ksm", WARN, "KSM not available in this kernel", "a kernel with CONFIG_KSM enables page merging")
    run = ksm.read_text().strip()
    meaning = {"0": "stopped", "1": "running", "2": "unmerging"}.get(run, run)
    return Check("ksm", PASS, f"KSM supported (run={run}: {meaning})")


def check_hugepages() -> Check:
    sizes = sorted(p.name.removeprefix("hugepages-") for p in Path("/sys/kernel/mm/hugepages").glob("hugepages-*"))
    if not sizes:
        return Check("hugepages", WARN, "no huge page sizes in /sys/kernel/mm/hugepages",
                     "a kernel with CONFIG_HUGETLBFS enables <hugepages/> backing")
    return Check("hugepages", PASS, "huge page sizes: " + ", ".join(sizes))


def check_iommu() -> Check:
    groups = Path("/sys/kernel/iommu_groups")
    count = len(list(groups.iterdir())) if groups.exists() else 0
    if count:
        return Check("iommu", PASS, f"IOMMU enabled ({count} groups): PCI passthrough possible")
    return Check("iommu", WARN, "IOMMU not enabled: no PCI device passthrough",
                 "add intel_iommu=on (or amd_iommu=on) iommu=pt to the kernel command line if you need passthrough")


def run_checks(uri: str) -> list[Check]:
    checks: list[Callable[[], Check]] = [
        check_cpu_flags, check_kvm_modules, check_kvm_device, check_kvm_usable,
        check_qemu, check_qemu_img, check_virtlogd,
        lambda: check_libvirtd(uri), lambda: _check_default(uri, "network"), lambda: _check_default(uri, "pool"),
        check_ksm, check_hugepages, check_iommu,
    ]
    results = []
    for fn in checks:
        try:
            results.append(fn())
        except Exception as err:  # a check that crashes is a failed check, not a crashed report
            results.append(Check(getattr(fn, "__name__", "check"), FAIL, f"check crashed: {err}"))
    return results


def report(uri: str) -> dict[str, object]:
    from kvmkit.host.virt_type import choose_virt_type

    checks = run_checks(uri)
    virt_type, why = choose_virt_type()
    return {
        "uri": uri,
        "ready": all(c.status != FAIL for c in checks),
        "virt_type": virt_type,
        "virt_type_reason": why,
        "checks": [c.to_dict() for c in checks],
        "user": os.environ.get("USER", ""),
    }
