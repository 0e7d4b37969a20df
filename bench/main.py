"""Entry point of ``bench/run``: set up, run the scenarios side by side, clean up, write RESULTS.md."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

import libvirt

from bench.common import PREFIX, URI, WORK, Ctx, Row, loadavg, log, machine, sweep

# key -> (module, function, one-line description)
SCENARIOS: dict[str, tuple[str, str, str]] = {
    "provision": ("bench.provision", "bench_provision", "1. template provisioning (virt-clone vs --template)"),
    "list": ("bench.listing", "bench_listing", "2, 5, 6. listing, API under load, server RSS"),
    "ten": ("bench.ten_vms", "bench_ten_vms", "3. ten VMs to running"),
    "snapshot": ("bench.snapshots", "bench_snapshots", "4. snapshot create + revert"),
    "boot": ("bench.boot", "bench_boot", "7. boot to ready marker by machine type"),
}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description="kvmkit benchmarks against virt-install, "
                                "virt-clone and virsh; writes bench/RESULTS.md")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes (development)")
    p.add_argument("--repeats", type=int, help="repeats per measurement (default 5, --quick 2)")
    p.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only these scenarios")
    p.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")), help="results file")
    p.add_argument("--load-seconds", type=int, help="API load duration (default 30, --quick 5)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from kvmkit.hypervisor.virt_type import choose_virt_type
    from kvmkit.images import micro

    started = datetime.now(UTC)
    load_start = loadavg()
    t_start = time.monotonic()
    conn = libvirt.open(URI)
    removed = sweep(conn, PREFIX)
    if removed:
        log(f"removed {removed} leftovers named {PREFIX}* from an earlier run")
    WORK.mkdir(parents=True, exist_ok=True)
    log("building (or reusing) the micro-guest")
    image = micro.build(WORK / "micro")
    virt_type, why = choose_virt_type()
    repeats = args.repeats or (2 if args.quick else 5)
    ctx = Ctx(conn, virt_type, image.kernel, image.initrd, image.cmdline, args.quick, repeats)
    facts = machine(conn, virt_type)
    rows: list[Row] = []
    failed: list[str] = []
    try:
        for key, (mod_name, fn_name, desc) in SCENARIOS.items():
            if args.only and key not in args.only:
                continue
            log(f"=== {desc}")
            t0 = time.monotonic()
            try:
                fn = getattr(importlib.import_module(mod_name), fn_name)
                if key == "list":
                    rows += fn(ctx, load_seconds=args.load_seconds or (5 if args.quick else 30))
                else:
                    rows += fn(ctx)
            except Exception as exc:  # one scenario failing must not lose the others
                traceback.print_exc()
                failed.append(key)
                ctx.notes.append(f"scenario '{desc}' failed: {type(exc).__name__}: {str(exc)[:300]}")
            finally:
                sweep(conn, PREFIX, files=False)  # objects only: keep the micro-guest copy and the db
            log(f"=== {desc}: {time.monotonic() - t0:.0f} s")
    finally:
        sweep(conn, PREFIX)
        shutil.rmtree(WORK, ignore_errors=True)
    run_info = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": ("quick (--quick: fewer repeats, smaller sizes; development only)" if args.quick
                 else "full") + f", {repeats} repeats per measurement",
        "duration": f"{time.monotonic() - t_start:.0f} s",
        "load average (1/5/15 min) at start": load_start,
        "load average at end": loadavg(),
        "guest type": f"{virt_type} ({why})",
        "micro-guest": f"kernel {image.kernel_version}, 256 MiB, 1 vCPU unless noted",
        "rerun": "`bench/run` (full, ~15 min) or `bench/run --quick`; `bench/run --only list` for one scenario",
    }
    from bench import report

    report.write(Path(args.out), rows=rows, machine=facts, run_info=run_info, notes=ctx.notes)
    log(f"wrote {args.out}; leftovers after cleanup: {sweep(conn, PREFIX)}")
    conn.close()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
