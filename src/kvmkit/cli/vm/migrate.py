"""``kvmkit vm migrate NAME --to HOST``: move a VM to another host of the inventory (docs/migration.md).

The VM's host is the global ``--host`` (default: the local host). Ctrl-C cancels: the migration job is
aborted and the VM stays on its host.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from kvmkit.cli.context import settings
from kvmkit.cli.output import console, emit

_STYLE = {"pass": "[green]PASS[/]", "warn": "[yellow]WARN[/]", "fail": "[red]FAIL[/]"}


def show_checks(checks: list[dict[str, Any]]) -> None:
    out = console()
    for c in checks:
        out.print(f"{_STYLE.get(c['status'], c['status'])}  {c['name']:<11} {c['detail']}")
        if c.get("fix") and c["status"] != "pass":
            out.print(f"      {'':<11} [dim]fix: {c['fix']}[/]")


@contextmanager
def live_status(start: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A status line on stderr that follows the migration's progress (silent with --json or no terminal)."""
    if settings.json or not sys.stderr.isatty():
        yield lambda _p: None
        return
    with console(stderr=True).status(start) as status:
        yield lambda p: status.update(f"{start}: {p.get('message') or ''}")


def show_result(r: dict[str, Any]) -> None:
    out = console()
    if r.get("warning"):
        out.print(f"[yellow]{r['warning']}[/]")
        return
    how = f"{r['mode']}, {r['transport']}" + (", disks copied" if r.get("copy_storage") else "")
    out.print(f"VM [bold]{r['vm']}[/] moved from host [bold]{r['from']}[/] to host [bold]{r['to']}[/] ({how}); "
              f"now {r.get('state')} there")
    if r.get("job_ms") is not None:
        out.print(f"  job {r['job_ms'] / 1000:.2f} s, downtime {r.get('downtime_ms')} ms, "
                  f"{(r.get('data_transferred') or 0) / 2**20:.1f} MiB sent in {r.get('iterations')} pass(es)"
                  + (", post-copy" if r.get("postcopy") else ""))
    out.print(f"  [dim]flags: {' '.join('VIR_MIGRATE_' + f for f in r['flags'])}[/]")
    if r.get("unsafe_reason"):
        out.print(f"  [yellow]VIR_MIGRATE_UNSAFE: {r['unsafe_reason']}[/]")
    for path in r.get("source_volumes_removed") or []:
        out.print(f"  removed host {r['from']}'s copy of {path}")
    for c in r.get("checks", []):
        if c["status"] == "warn":
            out.print(f"  [yellow]{c['name']}: {c['detail']}[/]")


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate(
        name: str = typer.Argument(..., help="the VM (on the --host host, default local)"),
        to: str = typer.Option(..., "--to", help="destination host (kvmkit host list)"),
        live: bool = typer.Option(False, "--live", help="live migration (the default for a running VM)"),
        offline: bool = typer.Option(False, "--offline", help="move a shut-off VM: its definition (and disks "
                                     "with --copy-storage)"),
        copy_storage: bool = typer.Option(False, "--copy-storage", help="copy the writable disks (storage the "
                                          "hosts do not share); the destination volumes are made first"),
        bandwidth: int = typer.Option(None, "--bandwidth", metavar="MiB/s", help="cap the migration stream"),
        auto_converge: bool = typer.Option(False, "--auto-converge", help="throttle the guest's vCPUs when "
                                           "its memory changes faster than it is sent"),
        postcopy: bool = typer.Option(False, "--postcopy", help="switch to post-copy after the first pass"),
        check: bool = typer.Option(False, "--check", help="run the pre-checks only and say what would happen"),
    ) -> None:
        """Move a VM to another host: live (shared storage, or --copy-storage) or offline. Pre-checks first
        (CPU, machine type, networks, disks, clocks, memory), each refusal naming its fix. The VM is defined on
        the destination only once the move succeeded; after any failure it runs on its host, defined there only."""
        from kvmkit.cli.context import host_name, hosts
        from kvmkit.errors import InvalidInput
        from kvmkit.service.migration.migrate import migrate_vm
        from kvmkit.service.migration.precheck import endpoints, plan_migration
        from kvmkit.spec.migration import MigrateSpec

        if live and offline:
            raise InvalidInput("--live and --offline exclude each other", hint="give one (or neither)")
        spec = MigrateSpec(to=to, mode="live" if live else "offline" if offline else None,
                           copy_storage=copy_storage, bandwidth_mib=bandwidth, auto_converge=auto_converge,
                           postcopy=postcopy)
        src, dst = endpoints(hosts(), host_name(), to)
        plan = plan_migration(src, dst, name, spec)
        if check:
            report = plan.to_dict()

            def human(p: dict[str, Any]) -> None:
                show_checks(p["checks"])
                verdict = "[green]can move[/]" if p["ok"] else "[red]refused[/]"
                console().print(f"VM [bold]{p['vm']}[/] -> host {p['dest']} ({p['mode']}, {p['transport']}): {verdict}")

            emit(report, human)
            if not report["ok"]:
                raise typer.Exit(1)
            return
        with live_status(f"migrating {name} to host {to}") as follow:
            result = migrate_vm(src, dst, name, spec, plan=plan, progress=follow)
        emit(result, show_result)
