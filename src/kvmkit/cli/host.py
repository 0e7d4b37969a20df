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
    """Readiness report: CPU flags, /dev/kvm usable, modules, libvirtd, QEMU, default network/pool, KSM,
    huge pages, IOMMU. Exit 1 when a check fails."""
    from kvmkit.host.check import report
    from kvmkit.host.virt_type import probe_kvm

    if refresh:
        probe_kvm(refresh=True)
    rep = report(settings.connect)
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


register_all(app, [
    "host_tuning",  # info, ksm, hugepages, iosched, profile, plan
    "host_remote",  # add, list, remove (other hosts)
    "host_metrics",  # metrics (the history kvmkit serve records)
])
