"""Scenario 3: ten micro-guests from nothing to all running (and to all ready markers).

Peer: ten ``virt-install --import`` runs (direct kernel boot of the micro-guest, 256 MiB, no NIC, no
disk), one after another and all at once. kvmkit: ten POST /api/v1/vms (``micro: true``, ``start:
true``) sent at once to ``kvmkit serve``; the clock stops when libvirt reports all ten running.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libvirt

from bench.common import PREFIX, READY, Ctx, Row, Series, Unavailable, log, run, wait_for_text, wait_running
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


def bench_ten_vms(ctx: Ctx) -> list[Row]:
    reps = 1 if ctx.quick else max(1, min(ctx.repeats, 2))  # ~1 min per repeat on an idle 2-core host
    results: dict[str, tuple[Series, Series]] = {}
    for tag, fn in (("seq", _sequential), ("con", _concurrent)):
        run_s, ready_s = Series(), Series()
        for rep in range(reps):
            r, m = fn(ctx, rep)
            run_s.samples.append(r)
            ready_s.samples.append(m)
        results[tag] = (run_s, ready_s)
        log(f"ten {tag}: running {run_s.samples} ready {ready_s.samples}")
    k_run, k_ready, missing = Series(), Series(), ""
    server = Server(task_workers=COUNT)
    try:
        server.start()
        for rep in range(reps):
            r, m = _api(ctx, server, rep)
            k_run.samples.append(r)
            k_ready.samples.append(m)
        log(f"ten api: running {k_run.samples} ready {k_ready.samples}")
    except (Unavailable, RuntimeError, TimeoutError) as exc:
        missing = f"failed: {str(exc)[:300]}"
    finally:
        server.stop()
    rows = []
    for tag, peer_name, target in (("seq", "10 × virt-install, sequential", ">= 5×"),
                                   ("con", "10 × virt-install, concurrent", ">= 2×")):
        for i, metric in enumerate(("all 10 running", "all 10 at ready marker")):
            k = (k_run, k_ready)[i]
            rows.append(Row(SCEN, "kvmkit: 10 concurrent POST /api/v1/vms (task workers 10)", metric, "s",
                            kvmkit=k if k.samples else None, kvmkit_missing=missing,
                            peer=results[tag][i], peer_name=peer_name, target=target if i == 0 else "",
                            met=lambda r, f=(5.0 if tag == "seq" else 2.0): r.p() >= f * r.k()))
    return rows
