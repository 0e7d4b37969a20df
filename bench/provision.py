"""Scenario 1: a running VM from a template whose disk holds 1, 10 and 30 GiB of written data.

Peer: ``virt-clone`` of a shut-off source domain (full copy of its disk) then ``virsh start``.
kvmkit: ``kvmkit vm create NAME --template T --start`` (a linked clone: a qcow2 overlay).
The template is a disk that boots the micro-guest through SYSLINUX (bench.bootdisk), the same disk
for both sides.
Both are timed from the command's start to the domain running (the command returned) and to the
micro-guest's ready marker in its serial log. Template data is random (incompressible) 64 MiB blocks
written into the qcow2 with qemu-io, so every cluster is allocated and holds non-zero data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

import libvirt
from lxml import etree

from bench.bootdisk import make_template_disk
from bench.common import KVMKIT, PREFIX, READY, WORK, Ctx, Row, Series, log, run, wait_for_text
from bench.guest import MicroXML
from bench.warm import COLD, cli_server

SCEN = "1. provision from template"
POOL = f"{PREFIX}pool"
CHUNK = 64 * 2**20


def _pool(ctx: Ctx) -> libvirt.virStoragePool:
    target = ctx.path("pool", "x").parent
    el = etree.Element("pool", type="dir")
    etree.SubElement(el, "name").text = POOL
    etree.SubElement(etree.SubElement(el, "target"), "path").text = str(target)
    pool = ctx.conn.storagePoolDefineXML(etree.tostring(el, encoding="unicode"))
    pool.create()
    return pool


def _refresh(ctx: Ctx) -> libvirt.virStoragePool:
    """The bench pool, looked up again (the connection may have been reopened), refreshed."""
    pool = ctx.conn.storagePoolLookupByName(POOL)
    if not pool.isActive():
        pool.create()
    pool.refresh(0)
    return pool


def _template(ctx: Ctx, gib: int) -> Path:
    """A bootable micro-guest qcow2 of (gib + 1) GiB with ``gib`` GiB of random data past the first GiB."""
    path = ctx.path("pool", f"{PREFIX}tmpl-{gib}g.qcow2")
    make_template_disk(ctx, path, gib + 1)
    pattern = ctx.path("pattern.bin")
    if not pattern.exists():
        pattern.write_bytes(os.urandom(CHUNK))
    per_call = 16  # qemu-io commands per process (each writes one 1 GiB range from the pattern)
    gib_ranges = [f"write -q -s {pattern} {i + 1}G 1G" for i in range(gib)]
    for start in range(0, len(gib_ranges), per_call):
        cmds: list[str] = []
        for c in gib_ranges[start:start + per_call]:
            cmds += ["-c", c]
        run(["qemu-io", "-f", "qcow2", *cmds, str(path)], timeout=1800)
    os.sync()  # no writeback of the set-up's dirty pages during the timed runs
    _refresh(ctx)
    return path


def _peer_once(ctx: Ctx, src: str, gib: int, i: int) -> tuple[float, float, float]:
    """virt-clone + virsh start: (to running, to ready marker, the ``virsh start`` alone)."""
    name = f"{PREFIX}vc-{gib}g-{i}"
    clone_path = ctx.path("pool", f"{name}.qcow2")
    log_path = ctx.path("prov", f"{src}.serial.log")  # virt-clone keeps the source's serial log path
    with contextlib.suppress(FileNotFoundError):
        log_path.unlink()
    cmd = ["virt-clone", "--connect", "qemu:///system", "--original", src, "--name", name, "--file", str(clone_path)]
    for attempt in range(3):  # virt-clone looks at every pool: one vanishing under it (another user) fails it
        t0 = time.perf_counter()
        try:
            run(cmd, timeout=3600)
            break
        except RuntimeError as exc:
            if attempt == 2 or "not found" not in str(exc):
                raise
            _drop_domain(ctx, name, undefine=True)
            log(f"virt-clone failed because something else changed under it, again: {exc}")
    t_start = time.perf_counter()
    run(["virsh", "-c", "qemu:///system", "start", name])
    running = time.perf_counter() - t0
    start_only = time.perf_counter() - t_start  # the floor: starting a VM that is already defined
    ready = wait_for_text(log_path, READY, t0)
    _drop_domain(ctx, name, undefine=True)
    with contextlib.suppress(FileNotFoundError):
        clone_path.unlink()
    os.sync()  # the copy's writeback must not land in the next timed run
    return running, ready, start_only


def _kvmkit_once(ctx: Ctx, template: str, gib: int, i: int, env: dict[str, str]) -> tuple[float, float]:
    name = f"{PREFIX}kc-{gib}g-{i}"
    log_path = ctx.path("prov", f"{name}.serial.log")
    log_path.unlink(missing_ok=True)
    t0 = time.perf_counter()
    run([KVMKIT, "vm", "create", name, "--template", template, "--memory", "256M",
         "--vcpus", "1", "--network", "none", "--serial-log", str(log_path), "--start"], timeout=600, env=env)
    running = time.perf_counter() - t0
    ready = wait_for_text(log_path, READY, t0)
    _drop_domain(ctx, name)
    run([KVMKIT, "vm", "delete", name, "--storage"], check=False)
    os.sync()
    return running, ready


def _drop_domain(ctx: Ctx, name: str, *, undefine: bool = False) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        ctx.conn.lookupByName(name).destroy()
    if undefine:
        with contextlib.suppress(libvirt.libvirtError):
            ctx.conn.lookupByName(name).undefine()
    # kvmkit's own delete removes its overlay; the peer's clone file is removed by the caller


def _sizes(ctx: Ctx) -> list[int]:
    return [1, 2] if ctx.quick else [1, 10, 30]


def _peer_repeats(ctx: Ctx, gib: int) -> int:
    return min(ctx.repeats, 2 if gib >= 30 else 3 if gib >= 10 else ctx.repeats)


def _kvmkit_available() -> str:
    _, proc = run([KVMKIT, "vm", "create", "--help"], check=False)
    if proc.returncode != 0 or "--template" not in proc.stdout:
        return "not available: `kvmkit vm create --template` missing"
    _, proc = run([KVMKIT, "template", "--help"], check=False)
    if proc.returncode != 0:
        return "not available: `kvmkit template` missing"
    return ""


def bench_provision(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    missing = _kvmkit_available()
    _pool(ctx)
    try:
        for gib in _sizes(ctx):
            free = shutil.disk_usage(WORK).free / 2**30
            need = 2 * gib + 5
            case = f"{gib} GiB written in the template"
            if free < need:
                ctx.notes.append(f"1: {gib} GiB template skipped: {free:.0f} GiB free, needs ~{need} GiB "
                                 "(template + virt-clone's full copy + margin)")
                rows.append(Row(SCEN, case, "to running", "s", kvmkit_missing="skipped: disk space",
                                peer_missing="skipped: disk space"))
                continue
            rows += _one_size(ctx, gib, case, missing)
    finally:
        _cleanup(ctx)
    return rows


def _one_size(ctx: Ctx, gib: int, case: str, missing: str) -> list[Row]:
    t0 = time.perf_counter()
    tpath = _template(ctx, gib)
    log(f"template {gib} GiB written in {time.perf_counter() - t0:.1f} s")
    # kvmkit first: it refuses to mark a volume that a VM uses as its disk, and virt-clone needs a source
    # VM, so the source VM for the peer is defined only after kvmkit's turn (and the template unmarked).
    k_run, k_ready, w_run, w_ready = Series(), Series(), Series(), Series()
    tname = f"{PREFIX}tmpl-{gib}g"
    if not missing:
        try:
            run([KVMKIT, "template", "mark", POOL, tpath.name, "--name", tname])
            for i in range(ctx.repeats):
                r, m = _kvmkit_once(ctx, tname, gib, i, COLD)
                k_run.samples.append(r)
                k_ready.samples.append(m)
            with cli_server() as warm_env:  # the same command through a warm `kvmkit cli-server`
                for i in range(ctx.repeats):
                    r, m = _kvmkit_once(ctx, tname, gib, 100 + i, warm_env)
                    w_run.samples.append(r)
                    w_ready.samples.append(m)
        except (RuntimeError, TimeoutError) as exc:
            missing = f"failed: {str(exc)[:300]}"
        finally:
            run([KVMKIT, "template", "unmark", tname], check=False)
    src = f"{PREFIX}tsrc-{gib}g"
    ctx.conn.defineXML(MicroXML(src, "", "", "",
                                str(ctx.path("prov", f"{src}.serial.log")), virt_type=ctx.virt_type,
                                disks=[{"path": str(tpath), "format": "qcow2"}]).xml())
    peer_run, peer_ready, floor = Series(), Series(), Series()
    peer_missing = ""
    try:
        for i in range(_peer_repeats(ctx, gib)):
            r, m, f = _peer_once(ctx, src, gib, i)
            peer_run.samples.append(r)
            floor.samples.append(f)
            peer_ready.samples.append(m)
    except (RuntimeError, TimeoutError) as exc:
        peer_missing = f"failed: {exc}"
    log(f"provision {gib} GiB: virt-clone+start {peer_run.samples} kvmkit {k_run.samples}")
    rows = []
    goal = "<= 0.15 s, flat in size; >= 10× virt-clone+start at 10 GiB"
    for metric, k, p, target in (
            ("to running", k_run, peer_run, goal), ("to ready marker", k_ready, peer_ready, ""),
            ("to running, kvmkit warm (cli-server)", w_run, peer_run, goal),
            ("to ready marker, kvmkit warm (cli-server)", w_ready, peer_ready, "")):
        row = Row(SCEN, case, metric, "s", peer_name="virt-clone + virsh start", target=target)
        if target:
            row.met = lambda r, g=gib: r.k() <= 0.15 and (g < 10 or r.p() >= 10 * r.k())
        row.kvmkit, row.kvmkit_missing = (k, "") if k.samples else (None, missing or "no sample")
        row.peer, row.peer_missing = (p, "") if p.samples else (None, peer_missing or "no sample")
        rows.append(row)
    if k_run.samples and floor.samples:
        rows.append(Row(SCEN, case, "to running", "s", kvmkit=k_run, peer=floor,
                        peer_name="floor: `virsh start` of the already-defined clone (process + virDomainCreate)"))
        ctx.notes.append(f"1: at {gib} GiB kvmkit's overhead over a bare `virsh start` of a defined clone: "
                         f"{k_run.median - floor.median:+.3f} s cold"
                         + (f", {w_run.median - floor.median:+.3f} s warm" if w_run.samples else "")
                         + " (median to running)")
    with contextlib.suppress(libvirt.libvirtError):
        ctx.conn.lookupByName(src).undefine()
    with contextlib.suppress(FileNotFoundError):
        tpath.unlink()
    _refresh(ctx)
    return rows


def _cleanup(ctx: Ctx) -> None:
    for dom in ctx.conn.listAllDomains():
        if dom.name().startswith((f"{PREFIX}vc-", f"{PREFIX}kc-", f"{PREFIX}tsrc-")):
            with contextlib.suppress(libvirt.libvirtError):
                if dom.isActive():
                    dom.destroy()
            with contextlib.suppress(libvirt.libvirtError):
                dom.undefine()
    with contextlib.suppress(libvirt.libvirtError):
        pool = _refresh(ctx)
        for vol in pool.listAllVolumes():
            with contextlib.suppress(libvirt.libvirtError):
                vol.delete(0)
        pool.destroy()
    with contextlib.suppress(libvirt.libvirtError):
        ctx.conn.storagePoolLookupByName(POOL).undefine()
    shutil.rmtree(WORK / "pool", ignore_errors=True)
