"""``kvmkit volume ...``: storage volumes: create, clone, resize, wipe, upload, download, delete."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, progress, table

app = typer.Typer(help="storage volumes: create, clone, resize, upload, download", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def _group() -> None:
    """storage volumes: create, clone, resize, upload, download"""


def _size(n: int | None) -> str:
    if n is None:
        return ""
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def _show(d: dict[str, Any]) -> None:
    out = console()
    out.print(f"[bold]{d['pool']}/{d['name']}[/] {d['format']}  {d['path']}")
    out.print(f"  capacity:   {_size(d['capacity'])}\n  allocation: {_size(d['allocation'])}")
    for i, b in enumerate(d.get("backing_chain") or []):
        out.print(f"  backing[{i}]: {b['path']} ({b['format']})")


@app.command("list")
def list_(pool: str = typer.Argument(...)) -> None:
    """The volumes of a pool."""
    from kvmkit.service.storage.volumes import list_volumes

    rows = list_volumes(connection(), pool)
    emit(rows, lambda rs: table([{**r, "capacity": _size(r["capacity"]), "allocation": _size(r["allocation"])}
                                 for r in rs], ["name", "format", "capacity", "allocation", "backing", "path"]))


@app.command()
def create(
    pool: str = typer.Argument(...), name: str = typer.Argument(...),
    size: str = typer.Option(..., "--size", help="e.g. 10G, 512M, 1GiB, 2048 (MiB)"),
    format_: str = typer.Option("qcow2", "--format", help="qcow2|raw"),
    preallocation: str = typer.Option(None, "--preallocation", help="full: allocate all space now (default sparse)"),
    backing: str = typer.Option(None, "--backing", help="a volume of the same pool to back this qcow2 volume"),
) -> None:
    """Create a volume (sparse by default)."""
    from kvmkit.service.storage.volumes import create_volume

    emit(create_volume(connection(), pool, name, size, fmt=format_, preallocation=preallocation, backing=backing),
         _show)


@app.command()
def info(pool: str = typer.Argument(...), name: str = typer.Argument(...)) -> None:
    """Capacity, allocation, format and backing chain of a volume."""
    from kvmkit.service.storage.volumes import volume_info

    emit(volume_info(connection(), pool, name), _show)


@app.command()
def delete(pool: str = typer.Argument(...), name: str = typer.Argument(...)) -> None:
    """Delete a volume (refused while a VM uses it, naming the VM)."""
    from kvmkit.service.storage.volumes import delete_volume

    emit(delete_volume(connection(), pool, name), lambda d: console().print(f"deleted {d['path']}"))


@app.command()
def clone(pool: str = typer.Argument(...), src: str = typer.Argument(...), new: str = typer.Argument(...),
          linked: bool = typer.Option(False, "--linked", help="qcow2 overlay backed by SRC instead of a copy")) -> None:
    """Copy a volume, or make a linked clone (qcow2 with SRC as its backing file)."""
    from kvmkit.service.storage.volumes import clone_volume

    emit(clone_volume(connection(), pool, src, new, linked=linked), _show)


@app.command()
def resize(pool: str = typer.Argument(...), name: str = typer.Argument(...), size: str = typer.Argument(...),
           allow_shrink: bool = typer.Option(False, "--allow-shrink", help="allow a smaller size (loses data)"),
           ) -> None:
    """Grow a volume to SIZE (shrinking needs --allow-shrink)."""
    from kvmkit.service.storage.volumes import resize_volume

    d = resize_volume(connection(), pool, name, size, allow_shrink=allow_shrink)
    if d.get("warning"):
        console(stderr=True).print(f"[yellow]warning:[/] {d['warning']}")
    emit(d, lambda x: console().print(f"{x['name']}: {_size(x['old_capacity'])} -> {_size(x['capacity'])}"))


@app.command()
def wipe(pool: str = typer.Argument(...), name: str = typer.Argument(...)) -> None:
    """Erase a volume's data (refused while a VM uses it)."""
    from kvmkit.service.storage.volumes import wipe_volume

    emit(wipe_volume(connection(), pool, name), lambda d: console().print(f"wiped {d['name']}"))


@app.command()
def upload(pool: str = typer.Argument(...), name: str = typer.Argument(...), file: str = typer.Argument(...),
           format_: str = typer.Option(None, "--format", help="the file's format (qcow2|raw); needed for a new volume"),
           ) -> None:
    """Upload FILE into volume NAME through libvirt (creates the volume when it does not exist)."""
    import os

    from kvmkit.service.storage.streams import upload as do_upload

    total = os.path.getsize(file) if os.path.isfile(file) else None
    with progress(f"upload {name}", total) as advance:
        d = do_upload(connection(), pool, name, file, fmt=format_, progress=lambda done, _t: advance(done))
    emit(d, _show)


@app.command()
def download(pool: str = typer.Argument(...), name: str = typer.Argument(...), file: str = typer.Argument(...),
             overwrite: bool = typer.Option(False, "--overwrite", help="replace FILE if it exists")) -> None:
    """Download volume NAME into FILE through libvirt."""
    from kvmkit.service.storage.streams import download as do_download

    with progress(f"download {name}") as advance:
        d = do_download(connection(), pool, name, file, overwrite=overwrite, progress=lambda done, _t: advance(done))
    emit(d, lambda x: console().print(f"{x['bytes']} bytes -> {x['file']}"))
