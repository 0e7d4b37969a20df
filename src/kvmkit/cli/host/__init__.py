"""``kvmkit host ...``: readiness checks and preparing this host."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import settings
from kvmkit.cli.output import console, emit
from kvmkit.cli.registry import register_all

app = typer.Typer(help="check, inspect and tune this host", no_args_is_help=True, add_completion=False)

_STYLE = {"pass": "[green]PASS[/]", "warn": "[yellow]WARN[/]", "fail": "[red]FAIL[/]"}


def _show_report(rep: dict[str, Any]) -> None:
    out = console()
    for c in rep["checks"]:
        out.print(f"{_STYLE[c['status']]}  {c['name']:<20} {c['detail']}")
        if c["hint"] and c["status"] != "pass":
            out.print(f"      {'':<20} [dim]fix: {c['hint']}[/]")
    out.print(f"\nguest type: [bold]{rep['virt_type']}[/] ({rep['virt_type_reason']})")
    out.print("[green]host is ready[/]" if rep["ready"] else "[red]host is NOT ready: fix the failures above[/]")


@app.command()
def check(refresh: bool = typer.Option(False, "--refresh", help="probe KVM again instead of using the cache")) -> None:
    """Readiness report: CPU flags, /dev/kvm usable, modules, libvirtd, QEMU, default network/pool,
    confinement (which user guests run as, AppArmor/SELinux), stale libvirt security records, KSM, huge
    pages, IOMMU. Exit 1 when a check fails."""
    from kvmkit.host.virt_type import probe_kvm
    from kvmkit.service.host.repair import readiness

    if refresh:
        probe_kvm(refresh=True)
    rep = readiness(settings.connect)
    emit(rep, _show_report)
    if not rep["ready"]:
        raise typer.Exit(1)


@app.command()
def prepare(wait: float = typer.Option(0, "--wait", help="seconds to wait for libvirtd to answer")) -> None:
    """Create/start/autostart the 'default' NAT network and 'default' dir pool (idempotent)."""
    from kvmkit.host.defaults import prepare as do_prepare
    from kvmkit.hypervisor.connection import connect, wait_for

    conn = wait_for(settings.connect, wait) if wait else connect(settings.connect)
    done = do_prepare(conn)
    emit({"changed": done}, lambda d: console().print("\n".join(d["changed"]) or "default network and pool ready"))


def _show_repair(res: dict[str, Any]) -> None:
    out = console()
    verb = "would clear" if res["dry_run"] else "cleared"
    for c in res["cleared"]:
        attrs = ", ".join(f"{k}={v}" for k, v in c["removed"].items())
        owner = f"; owner {c['owner_before']} -> {c['owner_after']}" if c["owner_after"] else ""
        out.print(f"{verb} {c['path']}: {attrs}{owner}")
    for k in res["kept"]:
        extra = k["refs"] - len(k["vms"]) if k["refs"] else 0
        leaked = f"; {extra} more than its running VMs (leaked earlier: repair once they stop)" if extra > 0 else ""
        out.print(f"[dim]kept {k['path']}: in use by running VM(s) {', '.join(k['vms'])} "
                  f"(ref_dac={k['refs']}{leaked})[/]")
    for s in res["skipped"]:
        out.print(f"[yellow]skipped {s['path']}: {s['skipped']}[/]")
    if not res["cleared"]:
        out.print(f"no stale libvirt security records ({res['scanned']} files looked at)")


@app.command()
def repair(
    dry_run: bool = typer.Option(False, "--dry-run", help="change nothing; say what would change"),
    path: list[str] = typer.Option([], "--path", help="only files under this file or directory (repeatable)"),
) -> None:
    """Clear stale libvirt security records: the trusted.libvirt.security.* attributes on files that no
    running VM uses (left by VMs whose stop did not complete libvirt's restore), giving each file back to the
    owner libvirt recorded. Files running VMs use are never touched. Says exactly what it changed."""
    from kvmkit.cli.context import connection
    from kvmkit.service.host.repair import repair as do_repair

    res = do_repair(connection(), dry_run=dry_run, paths=path or None)
    emit(res.to_dict(), _show_repair)


register_all(app, [
    "host.tuning",  # info, ksm, hugepages, iosched, profile, plan
    "host.remote",  # add, list, remove (other hosts)
    "host.metrics",  # metrics (the history kvmkit serve records)
    "host.migration",  # evacuate, cpu-baseline
])
