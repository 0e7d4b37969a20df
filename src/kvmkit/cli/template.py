"""``kvmkit template ...``: mark qcow2 volumes as templates for fast VM creation."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, table

app = typer.Typer(help="templates: mark qcow2 volumes as templates for fast VM creation", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def _group() -> None:
    """templates: mark qcow2 volumes as templates for fast VM creation"""


@app.command()
def mark(pool: str = typer.Argument(...), volume: str = typer.Argument(...),
         name: str = typer.Option(None, "--name", help="template name (default: the volume's name)"),
         description: str = typer.Option("", "--description")) -> None:
    """Mark a qcow2 volume as a template."""
    from kvmkit.service.storage.templates import mark as do_mark

    emit(do_mark(connection(), pool, volume, name=name, description=description),
         lambda d: console().print(f"template {d['name']}: {d['path']}"))


@app.command()
def unmark(name: str = typer.Argument(...)) -> None:
    """Stop treating a volume as a template (the volume stays)."""
    from kvmkit.service.storage.templates import unmark as do_unmark

    emit(do_unmark(name), lambda d: console().print(f"template {d['name']} unmarked"))


@app.command("list")
def list_() -> None:
    """All templates."""
    from kvmkit.service.storage.templates import list_templates

    def human(rows: list[dict[str, Any]]) -> None:
        table([{**r, "capacity": f"{r['capacity'] / 1024**3:.1f} GiB"} for r in rows],
              ["name", "pool", "volume", "capacity", "path", "description"])

    emit(list_templates(), human)


@app.command()
def provision(template: str = typer.Argument(...), volume: str = typer.Argument(...),
              pool: str = typer.Option(None, "--pool", help="pool of the new volume (default: the template's)"),
              full_clone: bool = typer.Option(False, "--full-clone", help="copy instead of a linked clone")) -> None:
    """Make a new volume from a template (linked clone by default)."""
    from kvmkit.service.storage.templates import provision_from_template

    path = provision_from_template(connection(), template, volume, pool=pool, linked=not full_clone)
    emit({"template": template, "volume": volume, "path": path, "linked": not full_clone},
         lambda d: console().print(d["path"]))
