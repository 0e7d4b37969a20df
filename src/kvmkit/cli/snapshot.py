"""``kvmkit snapshot ...``: create, list (as a tree), revert, delete and show the current snapshot."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit

app = typer.Typer(help="VM snapshots: create, list, revert, delete", no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """VM snapshots: internal (qcow2, with memory when running) or external disk-only overlays."""


def _line(s: dict[str, Any]) -> str:
    mark = " [bold green]<- current[/]" if s.get("current") else ""
    extra = f" [dim]{s['description']}[/]" if s.get("description") else ""
    how = f" [magenta]{s['consistency']}[/]" if s.get("consistency") else ""
    return f"{s['name']}  [cyan]{s['kind']}[/] {s['state']}{how} {s['created']}{extra}{mark}"


@app.command()
def create(vm: str = typer.Argument(..., help="the VM"),
           snap: str | None = typer.Argument(None, help="snapshot name (default: snap-<UTC time>)"),
           disk_only: bool = typer.Option(False, "--disk-only", help="external overlay files, disks only"),
           description: str | None = typer.Option(None, "--description", help="free text kept with it")) -> None:
    """Snapshot a VM: internal with memory when running; --disk-only for external overlays."""
    from kvmkit.service.copies.snapshots import create_snapshot

    with console(stderr=True).status(f"snapshotting {vm}"):
        res = create_snapshot(connection(), vm, snap, disk_only=disk_only, description=description)

    def show(r: dict[str, Any]) -> None:
        console().print(f"created snapshot {r['name']} of {r['vm']} ({r['kind']}, "
                        f"{'with' if r['memory'] else 'without'} memory, {r.get('consistency')})")
        if r.get("quiesce_error"):
            console().print(f"[yellow]not quiesced:[/] {r['quiesce_error']}")
        if r.get("note"):
            console().print(f"[yellow]note:[/] {r['note']}")

    emit(res, show)


@app.command("list")
def list_(vm: str = typer.Argument(..., help="the VM")) -> None:
    """Snapshots as a tree (children indented under their parent), the current one marked."""
    from kvmkit.service.copies.snapshots import list_snapshots

    items = list_snapshots(connection(), vm)

    def show(rows: list[dict[str, Any]]) -> None:
        if not rows:
            console().print(f"{vm} has no snapshots")
            return
        for r in rows:
            console().print("  " * r["depth"] + ("└─ " if r["depth"] else "") + _line(r))

    emit(items, show)


@app.command()
def revert(vm: str = typer.Argument(...), snap: str = typer.Argument(...)) -> None:
    """Return the VM to a snapshot; a snapshot of a running VM comes back running (no reboot)."""
    from kvmkit.service.copies.snapshots import revert_snapshot

    with console(stderr=True).status(f"reverting {vm} to {snap}"):
        res = revert_snapshot(connection(), vm, snap)
    emit(res, lambda r: console().print(f"{r['vm']} reverted to {r['snapshot']}: {r['state']}"))


@app.command()
def delete(vm: str = typer.Argument(...), snap: str = typer.Argument(...)) -> None:
    """Delete a snapshot; children stay usable; external overlays are merged back while the VM runs."""
    from kvmkit.service.copies.snapshots import delete_snapshot

    with console(stderr=True).status(f"deleting snapshot {snap} of {vm} (merging overlays back if external)"):
        res = delete_snapshot(connection(), vm, snap)

    def show(r: dict[str, Any]) -> None:
        merged = f" (merged {', '.join(r['merged'])})" if r["merged"] else ""
        console().print(f"deleted snapshot {r['deleted']} of {r['vm']}{merged}")

    emit(res, show)


@app.command()
def current(vm: str = typer.Argument(...)) -> None:
    """The current snapshot (the one the VM's state derives from), or none."""
    from kvmkit.service.copies.snapshots import current_snapshot

    res = current_snapshot(connection(), vm)
    emit(res, lambda r: console().print(_line(r) if r else f"{vm} has no current snapshot"))
