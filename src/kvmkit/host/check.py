"""``kvmkit host check``: is this host ready to run VMs? Like virt-host-validate plus the seeds' manual checks.

Each check returns pass / warn / fail with a one-line fix hint; a host is ready when nothing fails.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvmkit.host.seclabels import Held, LabelRecord

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


# -- confinement: which user QEMU runs as, and which security drivers label its files ----------------------

def host_lsms() -> set[str]:
    """The Linux security modules the host kernel runs that libvirt can confine guests with."""
    lsm = Path("/sys/kernel/security/lsm")
    with contextlib.suppress(OSError):
        return {m for m in lsm.read_text().strip().split(",") if m in ("apparmor", "selinux")}
    found = set()
    with contextlib.suppress(OSError):
        if Path("/sys/module/apparmor/parameters/enabled").read_text().strip() == "Y":
            found.add("apparmor")
    if Path("/sys/fs/selinux/enforce").exists():
        found.add("selinux")
    return found


def _who(owner: tuple[int, int]) -> str:
    import grp
    import pwd

    try:
        user = pwd.getpwuid(owner[0]).pw_name
    except KeyError:
        user = str(owner[0])
    try:
        group = grp.getgrgid(owner[1]).gr_name
    except KeyError:
        group = str(owner[1])
    return f"{user}:{group} (uid {owner[0]}, gid {owner[1]})"


def _secmodels(caps_xml: str) -> dict[str, dict[str, str]]:
    """libvirt's security drivers from its capabilities: model -> {virt type: base label}."""
    from lxml import etree

    host = etree.fromstring(caps_xml.encode()).find("host")
    models: dict[str, dict[str, str]] = {}
    for sec in host.iterfind("secmodel") if host is not None else []:
        model = sec.findtext("model") or ""
        models[model] = {b.get("type", ""): (b.text or "") for b in sec.iterfind("baselabel")}
    return models


def dac_base_owner(caps_xml: str) -> tuple[int, int] | None:
    """The uid, gid libvirt's DAC driver runs QEMU as and gives its files to (qemu.conf's user/group)."""
    from kvmkit.host.seclabels import parse_owner

    labels = _secmodels(caps_xml).get("dac", {})
    return parse_owner(labels.get("kvm") or labels.get("qemu"))


def confinement(caps_xml: str, lsms: set[str], running: list[tuple[str, str, str | None]]) -> Check:
    """The confinement verdict from libvirt's capabilities (its <secmodel>s: the security drivers it stacks,
    and the DAC driver's base label = qemu.conf's user:group), the host's LSMs, and the running VMs' live
    DAC labels ``(vm, seclabel type, label)``."""
    from kvmkit.host.seclabels import parse_owner

    models = _secmodels(caps_xml)
    mac = sorted(m for m in models if m in ("apparmor", "selinux"))
    if "dac" not in models:
        return Check("confinement", WARN, "libvirt reports no DAC security driver: guests may run as root "
                     f"with files unlabelled (security models: {', '.join(models) or 'none'})",
                     "set security_driver and user/group in /etc/libvirt/qemu.conf and restart libvirtd")
    labels = models["dac"]
    base = dac_base_owner(caps_xml)
    root_vms = [vm for vm, typ, label in running if typ == "none" or (parse_owner(label) or (1, 1))[0] == 0]
    if base is None:
        return Check("confinement", WARN, f"libvirt's DAC driver has no numeric base label ({labels})",
                     "check user/group in /etc/libvirt/qemu.conf")
    if base[0] == 0:
        return Check("confinement", WARN, "guests run as root: libvirt's DAC base label is "
                     f"{labels.get('kvm') or labels.get('qemu')} (qemu.conf user/group)",
                     'set user = "libvirt-qemu" and group = "libvirt-qemu" (your distribution\'s QEMU user) in '
                     "/etc/libvirt/qemu.conf and restart libvirtd")
    if root_vms:
        return Check("confinement", WARN, f"running VMs with a root DAC label (guests as root): "
                     f"{', '.join(sorted(root_vms))}",
                     "remove their <seclabel model='dac'> label (kvmkit vm xml NAME --replace) and restart them")
    detail = f"guests run as {_who(base)} under libvirt's DAC driver"
    if mac:
        detail += f", confined by {' and '.join(mac)}"
    missing = sorted(lsms - set(mac))
    if missing:
        return Check("confinement", WARN, f"{detail}; the host runs {', '.join(missing)} but libvirt does not use "
                     "it for guests", f"set security_driver = \"{missing[0]}\" in /etc/libvirt/qemu.conf and "
                     "restart libvirtd")
    if not mac:
        detail += "; no AppArmor or SELinux on this host (DAC only)"
    if running:
        detail += f"; {len(running)} running VM(s) checked"
    return Check("confinement", PASS, detail)


def check_confinement(uri: str) -> Check:
    from lxml import etree

    from kvmkit.errors import HostError
    from kvmkit.hypervisor.connection import connect

    try:
        conn = connect(uri)
    except HostError:
        return Check("confinement", FAIL, "libvirtd unreachable", "see the libvirtd check")
    try:
        import libvirt

        caps = conn.getCapabilities()
        running: list[tuple[str, str, str | None]] = []
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                root = etree.fromstring(dom.XMLDesc(0).encode())
                name = dom.name()
            except libvirt.libvirtError:
                continue  # stopped meanwhile
            for sec in root.iterfind("seclabel"):
                if sec.get("model") == "dac":
                    running.append((name, sec.get("type", "dynamic"), sec.findtext("label")))
    finally:
        conn.close()
    return confinement(caps, host_lsms(), running)


def check_security_records(stale: Sequence[LabelRecord], held: Sequence[Held], scanned: int) -> Check:
    """The verdict on libvirt's security records (see kvmkit.host.seclabels); the caller found them."""
    if not stale:
        extra = f"; {len(held)} file(s) with records are in use by running VMs" if held else ""
        return Check("security_records", PASS, f"no stale libvirt security records ({scanned} files looked at{extra})")
    shown = "; ".join(f"{r.path} ({r.summary()})" for r in stale[:3])
    more = f"; and {len(stale) - 3} more" if len(stale) > 3 else ""
    return Check("security_records", WARN,
                 f"{len(stale)} file(s) carry libvirt security records that no running VM holds: {shown}{more}. "
                 "libvirt never gives such a file back, and VMs started from it or a copy of it can fail with "
                 "'Setting different DAC user or group ... already in use'",
                 "run: kvmkit host repair (kvmkit host repair --dry-run shows what it would change)")


def run_checks(uri: str, extra: Sequence[Callable[[], Check]] = ()) -> list[Check]:
    checks: list[Callable[[], Check]] = [
        check_cpu_flags, check_kvm_modules, check_kvm_device, check_kvm_usable,
        check_qemu, check_qemu_img, check_virtlogd,
        lambda: check_libvirtd(uri), lambda: _check_default(uri, "network"), lambda: _check_default(uri, "pool"),
        lambda: check_confinement(uri), check_ksm, check_hugepages, check_iommu, *extra,
    ]
    results = []
    for fn in checks:
        try:
            results.append(fn())
        except Exception as err:  # a check that crashes is a failed check, not a crashed report
            results.append(Check(getattr(fn, "__name__", "check"), FAIL, f"check crashed: {err}"))
    return results


def report(uri: str, extra: Sequence[Callable[[], Check]] = ()) -> dict[str, object]:
    """The readiness report; ``extra``: more checks from callers that know more (the service layer adds
    the one that needs libvirt's view of running VMs: stale security records)."""
    from kvmkit.host.virt_type import choose_virt_type

    checks = run_checks(uri, extra)
    virt_type, why = choose_virt_type()
    return {
        "uri": uri,
        "ready": all(c.status != FAIL for c in checks),
        "virt_type": virt_type,
        "virt_type_reason": why,
        "checks": [c.to_dict() for c in checks],
        "user": os.environ.get("USER", ""),
    }
