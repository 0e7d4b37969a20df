"""``kvmkit image ...``: build guest images (micro-guest, Debian), inspect and convert disk images."""

from __future__ import annotations

import typer

from kvmkit.cli.output import console, emit
from kvmkit.errors import InvalidInput

app = typer.Typer(help="disk images and guest image builders", no_args_is_help=True, add_completion=False)

BUILDERS = ("micro", "debian-12")


@app.callback()
def _group() -> None:
    """disk images: info, convert, and guest images built from packages"""


@app.command()
def build(
    name: str = typer.Argument(..., help="micro (kernel + busybox initramfs) or debian-12 (qcow2 disk)"),
    out: str = typer.Option(None, "--out", help="micro: a directory; debian-12: the .qcow2 file to write"),
    force: bool = typer.Option(False, "--force", help="rebuild even when the cache is current"),
) -> None:
    """Build a guest image. Builds are cached in the data directory and redone only when inputs change."""
    if name == "micro":
        from kvmkit.images import micro

        image = micro.build(out, force=force)
        emit(image.to_dict(), lambda d: console().print(
            f"micro-guest {d['key']} (kernel {d['kernel_version']})\n  kernel: {d['kernel']}\n"
            f"  initrd: {d['initrd']}\n  cmdline: {d['cmdline']}"))
        return
    if name == "debian-12":
        from kvmkit.images import debian

        result = debian.build(out, force=force)
        emit(result, lambda d: console().print(f"debian-12 image: {d['path']}"))
        return
    raise InvalidInput(f"unknown image '{name}'", hint=f"choose one of: {', '.join(BUILDERS)}")
