"""Scenario 3: ten micro-guests from nothing to all running (and to all ready markers).

Peer: ten ``virt-install --import`` runs (direct kernel boot of the micro-guest, 256 MiB, no NIC, no
disk), one after another and all at once. kvmkit: ten POST /api/v1/vms (``micro: true``, ``start:
true``) sent at once to ``kvmkit serve``; the clock stops when libvirt reports all ten running.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt

from bench.common import PREFIX, READY, Ctx, Row, Series, Unavailable, loadavg, log, run, wait_for_text, wait_running
from bench.server import Server

SCEN = "3. ten VMs to running"
COUNT = 10


def _vi_cmd(ctx: Ctx, name: str, log_path: Path) -> list[str]:
    return ["virt-install", "--connect", "qemu:///system", "--name", name, "--memory", "256", "--vcpus", "1",
            "--virt-type", ctx.virt_type, "--osinfo", "detect=on,require=off", "--import", "--disk", "none",
            "--boot", f"kernel={ctx.kernel},initrd={ctx.initrd},kernel_args={ctx.cmdline}",
            "--network", "none", "--graphics", "none", "--serial", f"pty,log.file={log_path}",
            "--noautoconsole"]


def _names(tag: str, rep: int) -> list[str]:
    return [f"{PREFIX}ten-{tag}{rep}-{i}" for i in range(COUNT)]


def _logs(ctx: Ctx, names: list[str]) -> list[Path]:
    return [ctx.path("ten", f"{n}.serial.log") for n in names]


def _all_ready(logs: list[Path], t0: float) -> float:
    return max(wait_for_text(p, READY, t0, timeout=180) for p in logs)


def _remove(ctx: Ctx, names: list[str]) -> None:
    for n in names:
        with contextlib.suppress(libvirt.libvirtError):
            dom = ctx.conn.lookupByName(n)
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            dom.undefine()


def _sequential(ctx: Ctx, rep: int) -> tuple[float, float]:
    names = _names("seq", rep)
    logs = _logs(ctx, names)
    try:
        t0 = time.perf_counter()
        for n, p in zip(names, logs, strict=True):
            run(_vi_cmd(ctx, n, p), timeout=300)
        running = wait_running(ctx.conn, names, t0)
        return running, _all_ready(logs, t0)
    finally:
        _remove(ctx, names)


def _concurrent(ctx: Ctx, rep: int) -> tuple[float, float]:
    names = _names("con", rep)
    logs = _logs(ctx, names)
    try:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(_vi_cmd(ctx, n, p), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for n, p in zip(names, logs, strict=True)]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            if proc.returncode != 0:
                raise RuntimeError(f"virt-install failed: {err.decode()[-300:]}")
        running = wait_running(ctx.conn, names, t0)
        return running, _all_ready(logs, t0)
    finally:
        _remove(ctx, names)


def _floor_xml(ctx: Ctx, name: str, log_path: Path) -> str:
    """The domain kvmkit defines for the API body below (same shape, no kvmkit metadata)."""
    from kvmkit.spec.vm import VMSpec
    from kvmkit.xml.domain import spec_to_xml

    return spec_to_xml(VMSpec.model_validate({
        "name": name, "memory_mib": 256, "vcpus": 1, "nics": [], "kernel": ctx.kernel, "initrd": ctx.initrd,
        "cmdline": ctx.cmdline, "virt_type": ctx.virt_type, "serial_log": str(log_path)}))


def _floor(ctx: Ctx, rep: int) -> tuple[float, float]:
    """The least any tool must do: ten threads, each on its own open connection, defineXML (with libvirt's
    schema check, as kvmkit does) + create. No process start-up, no HTTP, no bookkeeping."""
    names = _names("floor", rep)
    logs = _logs(ctx, names)
    xmls = [_floor_xml(ctx, n, p) for n, p in zip(names, logs, strict=True)]
    conns = [libvirt.open(ctx.conn.getURI()) for _ in names]

    def one(i: int) -> None:
        conns[i].defineXMLFlags(xmls[i], libvirt.VIR_DOMAIN_DEFINE_VALIDATE).create()

    try:
        with ThreadPoolExecutor(COUNT) as pool:
            t0 = time.perf_counter()
            list(pool.map(one, range(COUNT)))
            running = wait_running(ctx.conn, names, t0)
        return running, _all_ready(logs, t0)
    finally:
        _remove(ctx, names)
        for c in conns:
            with contextlib.suppress(libvirt.libvirtError):
                c.close()
        for p in logs:
            p.unlink(missing_ok=True)


def _api(ctx: Ctx, server: Server, rep: int) -> tuple[float, float]:
    names = _names("api", rep)
    logs = _logs(ctx, names)

    def post(args: tuple[str, Path]) -> None:
        name, log_path = args
        body = {"name": name, "micro": True, "memory_mib": 256, "vcpus": 1, "nics": [],
                "serial_log": str(log_path), "start": True}
        resp = client.post("/api/v1/vms", json=body)
        if resp.status_code != 202:
            raise RuntimeError(f"POST /api/v1/vms {name}: {resp.status_code} {resp.text[:300]}")

    try:
        with server.client() as client, ThreadPoolExecutor(COUNT) as pool:
            client.get("/api/v1/vms").raise_for_status()  # connection warm, as a real client's would be
            t0 = time.perf_counter()
            list(pool.map(post, zip(names, logs, strict=True)))
            running = wait_running(ctx.conn, names, t0, timeout=180)
        return running, _all_ready(logs, t0)
    finally:
        _remove(ctx, names)
        for p in logs:
            p.unlink(missing_ok=True)


def _faster_by(factor: float) -> Callable[[Row], bool]:
    return lambda r: r.p() >= factor * r.k()


def bench_ten_vms(ctx: Ctx) -> list[Row]:
    """Each repeat runs the four sides back to back (sequential, concurrent, floor, kvmkit), so a change
    of load on the shared host hits all of them alike."""
    reps = 1 if ctx.quick else max(1, min(ctx.repeats, 2))  # ~1 min per repeat on an idle 2-core host
    results = {tag: (Series(), Series()) for tag in ("seq", "con", "floor")}
    k_run, k_ready, missing = Series(), Series(), ""
    started = Server(task_workers=COUNT)
    server: Server | None = started
    try:
        started.start()
    except Unavailable as exc:
        missing, server = f"failed: {str(exc)[:300]}", None
    try:
        for rep in range(reps):
            for tag, fn in (("seq", _sequential), ("con", _concurrent), ("floor", _floor)):
                r, m = fn(ctx, rep)
                results[tag][0].samples.append(r)
                results[tag][1].samples.append(m)
                log(f"ten {tag}: running {r:.3f} s, ready {m:.3f} s (load {loadavg()})")
            if server is not None and not missing:
                try:
                    r, m = _api(ctx, server, rep)
                    k_run.samples.append(r)
                    k_ready.samples.append(m)
                    log(f"ten api: running {r:.3f} s, ready {m:.3f} s (load {loadavg()})")
                except (RuntimeError, TimeoutError) as exc:
                    missing = f"failed: {str(exc)[:300]}"
    finally:
        if server is not None:
            server.stop()
    rows = []
    case = f"kvmkit: {COUNT} concurrent POST /api/v1/vms (task workers {COUNT})"
    for tag, peer_name, target in (("seq", "10 × virt-install, sequential", ">= 5×"),
                                   ("con", "10 × virt-install, concurrent", ">= 2×"),
                                   ("floor", "floor: libvirt-python, 10 threads × (defineXML + create), "
                                             "own connection each", "")):
        for i, metric in enumerate(("all 10 running", "all 10 at ready marker")):
            k = (k_run, k_ready)[i]
            factor = {"seq": 5.0, "con": 2.0}.get(tag)
            rows.append(Row(SCEN, case, metric, "s", kvmkit=k if k.samples else None, kvmkit_missing=missing,
                            peer=results[tag][i], peer_name=peer_name, target=target if i == 0 else "",
                            met=_faster_by(factor) if factor and i == 0 else None))
    if k_run.samples and results["floor"][0].samples:
        over = k_run.median - results["floor"][0].median
        ctx.notes.append(f"3: kvmkit's overhead over the libvirt floor (ten starts of the same domain shape from "
                         f"one process, no HTTP): {over:+.3f} s on the median to all running")
    return rows
