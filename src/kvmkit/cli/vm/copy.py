"""``kvmkit vm clone|backup|restore``: copies of VMs (full or linked clones, backups with checksums)."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, progress


def register(app: typer.Typer) -> None:
    @app.command()
    def clone(src: str = typer.Argument(..., help="the VM to copy (shut off or paused)"),
              new: str = typer.Argument(..., help="name of the new VM"),
              linked: bool = typer.Option(False, "--linked", help="qcow2 overlays on a shared base instead of "
                                          "full copies (the source gets a snapshot 'linked-NEW')")) -> None:
        """Clone a VM: new UUID, new MACs, disk files named after the new VM, its own serial log."""
        from kvmkit.service.copies.clone import clone_vm

        with progress(f"cloning {src} -> {new}", total=100, unit="percent") as advance:
            res = clone_vm(connection(), src, new, linked=linked, progress=advance)

        def show(r: dict[str, Any]) -> None:
            out = console()
            out.print(f"cloned [bold]{r['source']}[/] as [bold]{r['name']}[/] ({'linked' if r['linked'] else 'full'})")
            for d in r["disks"]:
                back = f" (backing {d['backing']})" if d.get("backing") else ""
                out.print(f"  {d['target']}: {d['path']} [{d['format']}]{back}")
            if r["source_snapshot"]:
                out.print(f"  {r['source']} now writes to an overlay; its snapshot {r['source_snapshot']} holds "
                          "the shared base: keep it while the clone exists")

        emit(res, show)

    @app.command()
    def backup(name: str = typer.Argument(..., help="the VM (running, paused or shut off)"),
               to: str = typer.Option(..., "--to", help="new or empty directory for the backup")) -> None:
        """Back up a VM: domain XML, every disk as compressed qcow2, manifest.json with sha256 sums."""
        from kvmkit.service.copies.backup import backup_vm

        with progress(f"backing up {name}", total=100, unit="percent") as advance:
            res = backup_vm(connection(), name, to, progress=advance)

        def show(m: dict[str, Any]) -> None:
            console().print(f"backed up [bold]{m['vm']}[/] to {to}: {len(m['disks'])} disk(s), {m['consistency']}")

        emit({**res, "path": to}, show)

    @app.command()
    def restore(backup_dir: str = typer.Argument(..., metavar="DIR", help="directory written by `vm backup`"),
                name: str | None = typer.Option(None, "--name", help="restore as a new VM (new UUID and MACs)"),
                pool: str | None = typer.Option(None, "--pool", help="storage pool for the disks (default: default)"),
                ) -> None:
        """Restore a VM from a backup; every sha256 is checked before anything is created."""
        from kvmkit.service.copies.restore import restore_vm

        with progress("restoring", total=100, unit="percent") as advance:
            res = restore_vm(connection(), backup_dir, name=name, pool=pool, progress=advance)

        def show(r: dict[str, Any]) -> None:
            console().print(f"restored [bold]{r['name']}[/] from {r['from']} into pool {r['pool']} "
                            f"({len(r['disks'])} disk(s)); start it with `kvmkit vm start {r['name']}`")

        emit(res, show)
