"""``kvmkit host evacuate NAME`` (every VM off a host) and ``kvmkit host cpu-baseline`` (a CPU model every host
runs, so VMs stay migratable); docs/migration.md."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.output import console, emit, table


def _show_evacuation(r: dict[str, Any]) -> None:
    out = console()
    out.print(f"host [bold]{r['host']}[/] is in maintenance")
    if r["moved"]:
        table([{**m, "downtime": "" if m["downtime_ms"] is None else f"{m['downtime_ms']} ms"} for m in r["moved"]],
              ["vm", "to", "mode", "downtime"], title="moved")
    for m in r["not_moved"]:
        out.print(f"[red]not moved: {m['vm']}[/]: {m['reason']}")
    if r["empty"]:
        out.print(f"host [bold]{r['host']}[/] has no VMs left")
    elif r["remaining"]:
        out.print(f"[yellow]left on host {r['host']}: {', '.join(r['remaining'])}[/]")


def _show_baseline(r: dict[str, Any]) -> None:
    out = console()
    out.print(f"CPU baseline of {r['virt_type']} guests on hosts {', '.join(r['hosts'])}: [bold]{r['model']}[/]")
    extra = [f"{'+' if p == 'require' else '-'}{n}" for n, p in sorted(r["features"].items())]
    if extra:
        out.print(f"  [dim]baseline features beyond the model: {' '.join(extra)}[/]")
    if not r["usable_everywhere"]:
        out.print(f"  {r['model']} as a bare model is not usable on every host: recommended [bold]{r['recommended']}[/]"
                  " (the model with the most features every host offers as it is)")
    out.print(f"  create VMs that can move between them with: kvmkit vm create ... {r['create_option']}")
    for x in r["left_out"]:
        out.print(f"[yellow]left out: {x['host']}: {x['reason']}[/]")


def register(app: typer.Typer) -> None:
    @app.command("evacuate")
    def evacuate(
        name: str = typer.Argument(..., help="the host to empty (local too)"),
        copy_storage: bool = typer.Option(False, "--copy-storage", help="copy the disks of VMs whose storage "
                                          "the other hosts do not share"),
        bandwidth: int = typer.Option(None, "--bandwidth", metavar="MiB/s", help="per live migration"),
        auto_converge: bool = typer.Option(False, "--auto-converge"),
        running_only: bool = typer.Option(False, "--running-only", help="leave shut-off VMs where they are"),
        to: list[str] = typer.Option([], "--to", help="only these hosts may receive VMs (repeatable)"),
    ) -> None:
        """Put a host in maintenance, then move every VM away (running ones live, shut-off ones offline) to the
        host placement picks. VMs no host can take are listed with each host's reason (exit 1)."""
        from kvmkit.cli.context import hosts
        from kvmkit.cli.vm.migrate import live_status
        from kvmkit.service.migration.evacuate import evacuate_host
        from kvmkit.spec.migration import EvacuateSpec

        spec = EvacuateSpec(copy_storage=copy_storage, bandwidth_mib=bandwidth, auto_converge=auto_converge,
                            include_shut_off=not running_only, to=to or None)
        with live_status(f"evacuating host {name}") as follow:
            res = evacuate_host(hosts(store=True), name, spec,
                                progress=lambda _pct, msg: follow({"message": msg}),
                                on_progress=lambda vm, p: follow({"message": f"{vm}: {p.get('message')}"}))
        emit(res, _show_evacuation)
        if res["not_moved"]:
            raise typer.Exit(1)

    @app.command("cpu-baseline")
    def cpu_baseline(
        host: list[str] = typer.Option([], "--of", help="only these hosts (repeatable; default: every host)"),
        virt_type: str = typer.Option(None, "--virt-type", help="kvm or qemu (default: kvm when every host runs "
                                      "kvm guests)"),
    ) -> None:
        """A CPU model every host can give its guests (libvirt's baseline of their host-model CPUs): create VMs
        with `--cpu MODEL` so they can migrate between those hosts."""
        from kvmkit.cli.context import hosts
        from kvmkit.errors import InvalidInput
        from kvmkit.service.migration.cpu_baseline import cpu_baseline as baseline

        if virt_type not in (None, "kvm", "qemu"):
            raise InvalidInput(f"--virt-type must be kvm or qemu, not {virt_type!r}", hint="--virt-type qemu")
        emit(baseline(hosts(store=True), names=host or None, virt_type=virt_type), _show_baseline)
