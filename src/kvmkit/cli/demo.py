"""``kvmkit demo``: boot the demo micro-guest and print how to reach its console."""

from __future__ import annotations

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit

app = typer.Typer(help="boot a demo micro-guest VM", add_completion=False)


@app.command()
def demo(
    name: str = typer.Option("kvmkit-demo", "--name", help="VM name"),
    wait: float = typer.Option(60, "--wait", help="seconds to wait for the guest to be ready"),
) -> None:
    """Create (once) and boot the micro-guest on the default network; print its address and console."""
    from kvmkit.service.vms.demo import ensure_demo

    out = console(stderr=True)
    info = ensure_demo(connection(), name, wait=wait, progress=lambda m: out.print(f"[dim]{m}[/]"))
    emit(info, lambda d: console().print(
        f"[green]VM {d['name']} is running[/] (guest ready{', address ' + d['ip'] if d['ip'] else ''})\n"
        f"  interactive serial console: {d['console']}   (leave with Ctrl-])\n"
        f"  serial log:                 {d['console_log']}"))
