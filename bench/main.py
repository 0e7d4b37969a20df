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

from bench.common import PREFIX, WORK, Ctx, Row, loadavg, log, machine, reconnect, sweep

# key -> (module, function, one-line description)
# (run in this order: the cheap ones first, so an interrupted run still has them; the table is sorted)
SCENARIOS: dict[str, tuple[str, str, str]] = {
    "list": ("bench.listing", "bench_listing", "2, 5, 6. listing, API under load, server RSS"),
    "provision": ("bench.provision", "bench_provision", "1. template provisioning (virt-clone vs --template)"),
    "boot": ("bench.boot", "bench_boot", "7. boot to ready marker by machine type"),
    "snapshot": ("bench.snapshots", "bench_snapshots", "4. snapshot create + revert"),
    "ten": ("bench.ten_vms", "bench_ten_vms", "3. ten VMs to running"),
    "upload": ("bench.upload", "bench_upload", "8. 1 GiB volume upload: API vs virsh vol-upload"),
    "portal": ("bench.portal", "bench_portal", "9. web portal: login to 1000 VMs painted, JS+CSS size"),
    "hosts": ("bench.hosts", "bench_hosts", "10. vm list over three hosts (the test bed) beside one"),
    "migrate": ("bench.migration", "bench_migration", "11. live migration between two hosts (kvmkit vs virsh)"),
}


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description="kvmkit benchmarks against virt-install, "
                                "virt-clone and virsh; writes bench/RESULTS.md")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes (development)")
    p.add_argument("--repeats", type=int, help="repeats per measurement (default 3, --quick 2)")
    p.add_argument("--only", action="append", choices=list(SCENARIOS), help="run only these scenarios")
    p.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")), help="results file")
    p.add_argument("--load-seconds", type=int, help="API load duration (default 30, --quick 5)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    from kvmkit.host.virt_type import choose_virt_type
    from kvmkit.images import micro
    from kvmkit.images.plain_copy import copy_file

    started = datetime.now(UTC)
    load_start = loadavg()
    t_start = time.monotonic()
    conn = reconnect()
    removed = sweep(conn, PREFIX)
    if removed:
        log(f"removed {removed} leftovers named {PREFIX}* from an earlier run")
    WORK.mkdir(parents=True, exist_ok=True)
    log("building (or reusing) the micro-guest")
    image = micro.build()
    # Private copies without extended attributes (copy_file): a copy carrying libvirt's DAC records of the
    # shared cache's users would make libvirt refuse to relabel it ("... which is already in use").
    own = WORK / "micro"
    own.mkdir(parents=True, exist_ok=True)
    kernel, initrd = own / "vmlinuz", own / "initrd.img"
    copy_file(image.kernel, kernel, metadata=False)
    copy_file(image.initrd, initrd, metadata=False)
    virt_type, why = choose_virt_type()
    repeats = args.repeats or (2 if args.quick else 3)
    ctx = Ctx(conn, virt_type, str(kernel), str(initrd), image.cmdline, args.quick, repeats)
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
                sweep(ctx.conn, PREFIX, files=False)  # objects only: keep the micro-guest copy and the db
            log(f"=== {desc}: {time.monotonic() - t0:.0f} s")
            _write(args, rows, facts, ctx, started, load_start, t_start, why, image.kernel_version, partial=True)
    finally:
        sweep(ctx.conn, PREFIX)
        shutil.rmtree(WORK, ignore_errors=True)
    _write(args, rows, facts, ctx, started, load_start, t_start, why, image.kernel_version, partial=False)
    log(f"wrote {args.out}; leftovers after cleanup: {sweep(ctx.conn, PREFIX)}")
    ctx.conn.close()
    return 1 if failed else 0


def _write(args: argparse.Namespace, rows: list[Row], facts: dict[str, str], ctx: Ctx, started: datetime,
           load_start: str, t_start: float, why: str, kernel_version: str, *, partial: bool) -> None:
    """Write RESULTS.md (also after each scenario, so an interrupted run keeps what it measured)."""
    run_info = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "mode": ("quick (--quick: fewer repeats, smaller sizes; development only)" if args.quick
                 else "full") + f", {ctx.repeats} repeats per measurement unless noted"
                + (" — PARTIAL: the run was still going when this was written" if partial else ""),
        "duration": f"{time.monotonic() - t_start:.0f} s",
        "load average (1/5/15 min) at start": load_start,
        "load average at end": loadavg(),
        "guest type": f"{ctx.virt_type} ({why})",
        "micro-guest": f"kernel {kernel_version}, 256 MiB, 1 vCPU unless noted",
        "rerun": "`bench/run` (full, ~15 min) or `bench/run --quick`; `bench/run --only list` for one scenario",
    }
    from bench import report

    report.write(Path(args.out), rows=rows, machine=facts, run_info=run_info, notes=ctx.notes,
                 sections=ctx.sections)


if __name__ == "__main__":
    sys.exit(main())
