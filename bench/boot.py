"""Scenario 7: boot of the micro-guest to its ready marker, by machine type and firmware.

Each variant is defined through libvirt-python, started with ``dom.create()`` and timed from that call
until ``KVMKIT-GUEST-READY`` appears in the serial log. The fastest variant is what
``vm create --profile fast-boot`` should set; virt-install's own default (the peer) is measured too.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import libvirt

from bench.common import KVMKIT, PREFIX, READY, Ctx, Row, Series, Unavailable, log, run, wait_for_text
from bench.guest import MicroXML
from bench.warm import COLD, cli_server


@dataclass
class Variant:
    key: str
    label: str
    machine: str
    firmware: str = ""
    lean: bool = False
    extra_cmdline: str = ""
    pvh: bool = False  # boot the decompressed ELF vmlinux through its PVH entry instead of the bzImage


# Kernel arguments of the lean shapes: skip probing a PS/2 controller the guest does not use. (Also tried:
# "tsc=reliable no_timer_check" and "mitigations=off nokaslr": under TCG they made 2 of 6 microvm boots hang
# before the ready marker, for no measurable gain, so a shipped profile must not use them.)
FAST_CMDLINE = "i8042.noaux i8042.nokbd i8042.nopnp"
# What `--profile fast-boot` appends (kvmkit.spec.profiles.FAST_BOOT_ARGS: no security cost), and the
# lead's extra arguments that do cost security (hardening, mitigations, audit, LSMs, KASLR) for comparison.
PROFILE_CMDLINE = "i8042.noaux i8042.nokbd i8042.nopnp cryptomgr.notests"
UNSAFE_CMDLINE = "mitigations=off init_on_alloc=0 audit=0 lsm= nokaslr"

VARIANTS = [
    Variant("q35-efi", "q35 + UEFI firmware (OVMF), kernel via fw_cfg", "q35", "efi"),
    Variant("pc-direct", "pc (i440fx) + SeaBIOS, direct kernel boot (kvmkit --micro default)", "pc"),
    Variant("q35-direct", "q35 + SeaBIOS, direct kernel boot", "q35"),
    Variant("microvm", "microvm machine type, virtio-mmio, no firmware, no ACPI", "microvm"),
    Variant("microvm-lean", "microvm, no firmware, no ACPI, no i8042 probe", "microvm", extra_cmdline=FAST_CMDLINE),
    Variant("pc-lean", "pc direct kernel boot, no USB/balloon, no i8042 probe", "pc", lean=True,
            extra_cmdline=FAST_CMDLINE),
    Variant("q35-lean", "q35 direct kernel boot, no USB/balloon, no i8042 probe", "q35", lean=True,
            extra_cmdline=FAST_CMDLINE),
    Variant("q35-lean-pvh", "q35 lean, PVH vmlinux, no i8042 probe", "q35", lean=True,
            extra_cmdline=FAST_CMDLINE, pvh=True),
    Variant("q35-profile", "q35 lean, PVH vmlinux, the profile's kernel args (= --profile fast-boot)", "q35",
            lean=True, extra_cmdline=PROFILE_CMDLINE, pvh=True),
    Variant("q35-profile-unsafe", "q35 lean, PVH, profile args + mitigations=off init_on_alloc=0 audit=0 lsm= "
            "nokaslr (security cost)", "q35", lean=True, extra_cmdline=f"{PROFILE_CMDLINE} {UNSAFE_CMDLINE}",
            pvh=True),
    Variant("microvm-pvh", "microvm, PVH vmlinux, no ACPI, the profile's kernel args", "microvm",
            extra_cmdline=PROFILE_CMDLINE, pvh=True),
]


def _pvh_kernel(ctx: Ctx) -> str:
    """A private copy of the micro-guest's PVH vmlinux next to the harness's bzImage copy (see main.py)."""
    own = Path(ctx.kernel).with_name("vmlinux")
    if not own.exists():
        from kvmkit.images import micro
        from kvmkit.images.plain_copy import copy_file

        image = micro.build()
        if not image.pvh_kernel:
            raise Unavailable(f"no PVH vmlinux: {image.pvh_note}")
        copy_file(image.pvh_kernel, own, metadata=False)
    return str(own)


def _boot_once(ctx: Ctx, v: Variant, i: int) -> tuple[float, float]:
    name = f"{PREFIX}boot-{v.key}-{i}"
    log_path = ctx.path("boot", f"{name}.serial.log")
    log_path.unlink(missing_ok=True)
    kernel = _pvh_kernel(ctx) if v.pvh else ctx.kernel
    xml = MicroXML(name, kernel, ctx.initrd, ctx.cmdline, str(log_path), virt_type=ctx.virt_type,
                   machine=v.machine, firmware=v.firmware, lean=v.lean, extra_cmdline=v.extra_cmdline).xml()
    dom = ctx.conn.defineXML(xml)
    try:
        t0 = time.perf_counter()
        dom.create()
        running = time.perf_counter() - t0
        ready = wait_for_text(log_path, READY, t0, timeout=60)
        return running, ready
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _virt_install_once(ctx: Ctx, i: int) -> tuple[float, float]:
    name = f"{PREFIX}boot-vi-{i}"
    log_path = ctx.path("boot", f"{name}.serial.log")
    log_path.unlink(missing_ok=True)
    cmd = ["virt-install", "--connect", "qemu:///system", "--name", name, "--memory", "256", "--vcpus", "1",
           "--virt-type", ctx.virt_type, "--osinfo", "detect=on,require=off", "--import", "--disk", "none",
           "--boot", f"kernel={ctx.kernel},initrd={ctx.initrd},kernel_args={ctx.cmdline}",
           "--network", "none", "--graphics", "none", "--serial", f"pty,log.file={log_path}",
           "--noautoconsole"]
    t0 = time.perf_counter()
    try:
        run(cmd, timeout=120)
        running = time.perf_counter() - t0
        ready = wait_for_text(log_path, READY, t0, timeout=90)
        return running, ready
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom = ctx.conn.lookupByName(name)
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _kvmkit_once(ctx: Ctx, i: int, key: str, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    # one name (and serial log) per shape and round: kvmkit's serial logs append, so a log reused from another
    # shape (or an earlier run) would already hold the ready marker
    name = f"{PREFIX}boot-kvmkit-{key}-{i}"
    log_path = ctx.path("boot", f"{name}.serial.log")
    log_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    try:
        run([KVMKIT, "vm", "create", name, *args, "--memory", "256M", "--vcpus", "1", "--network", "none",
             "--serial-log", str(log_path), "--start"], timeout=300, env=env)
        running = time.perf_counter() - t0
        return running, wait_for_text(log_path, READY, t0, timeout=90)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom = ctx.conn.lookupByName(name)
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)


def _minimal_micro():  # -> MicroImage | None
    """The micro-guest on the minimal kernel (kvmkit.images.minimal_kernel), only when that kernel is built
    already: building it takes ~10 min, which is not the benchmark's job (`kvmkit image build micro --kernel
    minimal` does it)."""
    try:
        from kvmkit.images import micro
        from kvmkit.images import minimal_kernel as mk
    except ImportError:
        return None
    sources = mk.cached_sources()
    built = mk.cached(mk.cache_key(sources[-1])) if sources else None
    return micro.build(kernel=mk.kernel_tree(built)) if built else None


def _kvmkit_shapes(ctx: Ctx) -> list[tuple[str, str, list[str]]]:
    """kvmkit itself: `vm create --micro --start`, `--profile fast-boot` when it exists, and the same profile
    with the minimal kernel when that is built: (label, key, create arguments)."""
    _, proc = run([KVMKIT, "vm", "create", "--help"], check=False)
    shapes = [("kvmkit vm create --micro --start (its default shape)", "default", ["--micro"])]
    if "--profile" not in proc.stdout:
        ctx.notes.append("7: `kvmkit vm create --profile` does not exist yet: the fast-boot row is the domain "
                         "shape measured through libvirt-python, not kvmkit")
        return shapes
    shapes.append(("kvmkit vm create --micro --profile fast-boot --start", "fast", ["--micro", "--profile",
                                                                                    "fast-boot"]))
    minimal = _minimal_micro()
    if minimal is None:
        ctx.notes.append("7: the minimal kernel is not built (kvmkit image build micro --kernel minimal): no "
                         "fast-boot row with it")
    else:
        shapes.append(("kvmkit vm create --kernel MINIMAL --initrd ... --profile fast-boot --start (minimal "
                       "kernel, micro initramfs)", "fast-minimal",
                       ["--kernel", minimal.kernel, "--initrd", minimal.initrd, "--cmdline", minimal.cmdline,
                        "--profile", "fast-boot"]))
        ctx.notes.append(f"7: minimal kernel row: {minimal.kernel_version}; --profile fast-boot boots its PVH "
                         f"vmlinux ({minimal.pvh_kernel})")
    # the same fast-boot commands through a warm `kvmkit cli-server` (no Python start-up in the command)
    shapes += [(f"{label}, warm (kvmkit cli-server)", f"{key}-warm", args) for label, key, args in shapes
               if key.startswith("fast")]
    return shapes


def bench_boot(ctx: Ctx) -> list[Row]:
    """Rounds: each round boots every case once (virt-install, kvmkit, each shape), so that load from other
    processes on a shared host spreads over all cases instead of landing on a few."""
    n = max(ctx.repeats, 3)
    peer_run, peer_ready = Series(), Series()
    peer_missing = ""
    shapes = _kvmkit_shapes(ctx)
    kvmkit_ready: dict[str, Series] = {label: Series() for label, _, _ in shapes}
    kvmkit_missing: dict[str, str] = {}
    run_s: dict[str, Series] = {v.key: Series() for v in VARIANTS}
    ready_s: dict[str, Series] = {v.key: Series() for v in VARIANTS}
    errors: dict[str, str] = {}
    with cli_server() as warm_env:
        for i in range(n):
            if not peer_missing:
                try:
                    r, m = _virt_install_once(ctx, i)
                    peer_run.samples.append(r)
                    peer_ready.samples.append(m)
                except Exception as exc:  # reported, not fatal
                    peer_missing = f"virt-install failed: {exc}"
            for label, key, args in shapes:
                if label in kvmkit_missing:
                    continue
                try:
                    env = warm_env if key.endswith("-warm") else COLD
                    kvmkit_ready[label].samples.append(_kvmkit_once(ctx, i, key, args, env)[1])
                except (RuntimeError, TimeoutError) as exc:
                    kvmkit_missing[label] = f"failed: {str(exc)[:300]}"
            for v in VARIANTS:
                try:
                    r, m = _boot_once(ctx, v, i)
                    run_s[v.key].samples.append(r)
                    ready_s[v.key].samples.append(m)
                except (libvirt.libvirtError, TimeoutError, Unavailable) as exc:
                    errors[v.key] = str(exc).splitlines()[0][:200]
                    ctx.notes.append(f"7: {v.key} boot {i} failed: {errors[v.key]}")
            log(f"boot round {i + 1}/{n} done")
    kvmkit_rows = []
    for label, key, _args in shapes:
        row = Row("7. boot to ready marker", label, "command start → ready marker", "s",
                  peer_name="virt-install --import", target="<= 1.0 s" if key != "default" else "",
                  peer=peer_ready if peer_ready.samples else None, peer_missing=peer_missing,
                  met=lambda r: r.k() <= 1.0)
        if label in kvmkit_missing:
            row.kvmkit_missing = kvmkit_missing[label]
        else:
            row.kvmkit = kvmkit_ready[label]
        kvmkit_rows.append(row)
    results: dict[str, tuple[Series, Series] | str] = {}
    for v in VARIANTS:
        if ready_s[v.key].samples:
            if v.key in errors:
                ready_s[v.key].note = f"{n - len(ready_s[v.key].samples)} of {n} boots failed (notes)"
            results[v.key] = (run_s[v.key], ready_s[v.key])
            log(f"boot {v.key}: ready median {ready_s[v.key].median:.2f} s")
        else:
            results[v.key] = f"not available: {errors.get(v.key, '')}"
    rows: list[Row] = []
    timed = {k: val for k, val in results.items() if isinstance(val, tuple)}
    fastest = min(timed, key=lambda k: timed[k][1].median) if timed else ""
    for v in VARIANTS:
        val = results[v.key]
        label = v.label + (" **(fastest)**" if v.key == fastest else "")
        row = Row("7. boot to ready marker", f"domain shape: {label}", "virDomainCreate → ready marker", "s",
                  peer_name="virt-install --import", target="<= 1.0 s (fast-boot profile)",
                  met=lambda r: r.k() <= 1.0)
        if isinstance(val, tuple):
            row.kvmkit = val[1]
        else:
            row.kvmkit_missing = val
        if peer_missing:
            row.peer_missing = peer_missing
        else:
            row.peer = peer_ready
        rows.append(row)
    rows = kvmkit_rows + rows
    if peer_run.samples:
        ctx.notes.append(f"7: virt-install --import returned (domain running) after {peer_run.median:.2f} s "
                         f"median; the table shows its time to the ready marker.")
    # The profile's shape: the fastest one that keeps ACPI (microvm is measured without it: see guest.py)
    # and costs no security (the -unsafe variant is there to show what those arguments would buy).
    usable = {k: val for k, val in timed.items() if not k.startswith("microvm") and not k.endswith("-unsafe")}
    profile = min(usable, key=lambda k: usable[k][1].median) if usable else ""
    if fastest:
        ctx.notes.append(f"7: fastest shape overall: {fastest}; fastest shape with ACPI (graceful shutdown), "
                         f"the one to ship as --profile fast-boot: {profile or 'none measured'}; what --profile "
                          f"fast-boot ships is q35-profile (kvmkit.spec.profiles)")
    if profile:
        best = next(v for v in VARIANTS if v.key == profile)
        shape = MicroXML("NAME", "KERNEL", "INITRD", ctx.cmdline, "/var/log/kvmkit/NAME.serial.log",
                         virt_type=ctx.virt_type, machine=best.machine, firmware=best.firmware, lean=best.lean,
                         extra_cmdline=best.extra_cmdline).xml()
        from lxml import etree

        pretty = etree.tostring(etree.fromstring(shape), pretty_print=True, encoding="unicode")
        ctx.sections[f"Fast-boot profile: the fastest shape with ACPI ({best.key})"] = pretty
        ctx.notes.append(f"7: '{best.label}' (machine={best.machine}, firmware={best.firmware or 'SeaBIOS'}, "
                         f"lean devices={best.lean}, extra kernel args='{best.extra_cmdline}'): its domain XML "
                         "is at the end of this file; the 'domain shape' rows are XML started by libvirt-python.")
    return rows


# -- kernel arguments, raw QEMU: `.venv/bin/python -m bench.boot [ROUNDS]` -----------------------------------
# Not part of bench/run: a development tool that decided FAST_BOOT_ARGS. It boots the micro-guest with plain
# qemu-system-x86_64 (q35, TCG, -nodefaults, serial on stdout), the cases interleaved round by round, and
# reports wall time and QEMU's CPU time (user+sys) to the ready marker. CPU time is the steadier figure on a
# shared host: other processes delay the guest but hardly change how much work it does.

ARG_CASES = {
    "bzImage": ("bz", ""),
    "PVH vmlinux": ("pvh", ""),
    "PVH + i8042.*": ("pvh", FAST_CMDLINE),
    "PVH + i8042.* + cryptomgr.notests (profile)": ("pvh", PROFILE_CMDLINE),
    "profile + rcupdate.rcu_expedited=1": ("pvh", f"{PROFILE_CMDLINE} rcupdate.rcu_expedited=1"),
    "profile + no_timer_check": ("pvh", f"{PROFILE_CMDLINE} no_timer_check"),
    "profile + tsc=reliable": ("pvh", f"{PROFILE_CMDLINE} tsc=reliable"),
    "profile + security-costing args": ("pvh", f"{PROFILE_CMDLINE} {UNSAFE_CMDLINE}"),
}


def _raw_boot(kernel: str, initrd: str, cmdline: str, timeout: float = 60) -> tuple[float, float] | None:
    import os
    import select
    import subprocess

    cmd = ["qemu-system-x86_64", "-machine", "q35", "-accel", "tcg", "-m", "256", "-nodefaults", "-display",
           "none", "-no-user-config", "-kernel", kernel, "-initrd", initrd, "-append", cmdline, "-serial", "stdio",
           "-no-reboot"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    out, ready = b"", False
    try:
        while not ready and time.perf_counter() - t0 < timeout:
            if select.select([proc.stdout], [], [], 1)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
                ready = READY.encode() in out
        wall = time.perf_counter() - t0
        with open(f"/proc/{proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    finally:
        proc.kill()
        proc.wait()
    return (wall, cpu) if ready else None


def kernel_args_table(rounds: int = 5) -> str:
    import os
    import statistics

    from kvmkit.images import micro

    image = micro.build()
    if not image.pvh_kernel:
        raise SystemExit(f"no PVH vmlinux: {image.pvh_note}")
    kernels = {"bz": image.kernel, "pvh": image.pvh_kernel}
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in ARG_CASES}
    load0 = os.getloadavg()
    for _ in range(rounds):
        for case, (kern, extra) in ARG_CASES.items():
            res = _raw_boot(kernels[kern], image.initrd, f"{image.cmdline} {extra}".strip())
            if res:
                got[case].append(res)
    lines = [f"load average {load0[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; {rounds} rounds",
             "| case | wall median (min) | QEMU CPU median (min) | n |", "|---|---|---|---|"]
    for case, samples in got.items():
        if not samples:
            lines.append(f"| {case} | no boot reached the marker | | 0 |")
            continue
        wall, cpu = [s[0] for s in samples], [s[1] for s in samples]
        lines.append(f"| {case} | {statistics.median(wall):.2f} s ({min(wall):.2f}) | "
                     f"{statistics.median(cpu):.2f} s ({min(cpu):.2f}) | {len(samples)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    print(kernel_args_table(int(sys.argv[1]) if len(sys.argv) > 1 else 5))
