"""``kvmkit image ...``: build guest images (micro-guest, Debian), inspect and convert disk images."""

from __future__ import annotations

import typer

from kvmkit.cli.output import console, emit
from kvmkit.errors import InvalidInput

app = typer.Typer(help="disk images and guest image builders", no_args_is_help=True, add_completion=False)

BUILDERS = ("micro", "debian-12")


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def _show_info(d: dict) -> None:
    out = console()
    out.print(f"[bold]{d['path']}[/]\n  format:       {d['format']}\n  virtual size: {_gib(d['virtual_size'])}\n"
              f"  actual size:  {_gib(d['actual_size'])}")
    if d.get("backing_file"):
        out.print(f"  backing file: {d['backing_file']} ({d.get('backing_format')})")
    for i, b in enumerate(d.get("backing_chain") or []):
        out.print(f"  chain[{i}]:     {b['path']} ({b['format']}, virtual {_gib(b['virtual_size'])})")


@app.callback()
def _group() -> None:
    """disk images: info, convert, and guest images built from packages"""


def _minimal_kernel_tree(force: bool):
    """Build (or reuse) the minimal kernel with a progress bar; the tree micro.build() takes as its kernel."""
    from kvmkit.cli.output import progress
    from kvmkit.images import minimal_kernel

    with progress("minimal kernel", 100, unit="percent") as advance:
        built = minimal_kernel.build(force=force, progress=lambda _stage, pct: advance(pct))
    return minimal_kernel.kernel_tree(built)


@app.command()
def build(
    name: str = typer.Argument(..., help="micro (kernel + busybox initramfs) or debian-12 (qcow2 disk)"),
    out: str = typer.Option(None, "--out", help="micro: a directory; debian-12: the .qcow2 file to write"),
    force: bool = typer.Option(False, "--force", help="rebuild even when the cache is current"),
    kernel: str = typer.Option("debian", "--kernel",
                               help="micro: debian (Debian's cloud kernel + modules) or minimal (built from "
                                    "Debian's kernel source, everything built in, boots faster)"),
) -> None:
    """Build a guest image. Builds are cached in the data directory and redone only when inputs change."""
    if kernel not in ("debian", "minimal") or (kernel != "debian" and name != "micro"):
        raise InvalidInput(f"--kernel {kernel} is not available for image '{name}'",
                           hint="--kernel takes debian or minimal, and only for the micro image")
    if name == "micro":
        from kvmkit.images import micro

        image = micro.build(out, force=force, kernel=_minimal_kernel_tree(force) if kernel == "minimal" else None)
        emit(image.to_dict(), lambda d: console().print(
            f"micro-guest {d['key']} (kernel {d['kernel_version']})\n  kernel: {d['kernel']}\n"
            f"  initrd: {d['initrd']}\n  cmdline: {d['cmdline']}"))
        return
    if name == "debian-12":
        from kvmkit.cli.context import settings
        from kvmkit.images import debian

        err = console(stderr=True)
        result = debian.build(out, force=force,
                              progress=None if settings.json else lambda stage: err.print(f"[dim]... {stage}[/]"))
        emit(result, lambda d: console().print(f"debian-12 image: {d['path']}"))
        return
    raise InvalidInput(f"unknown image '{name}'", hint=f"choose one of: {', '.join(BUILDERS)}")


@app.command()
def info(
    file: str = typer.Argument(..., help="an image file"),
    format_: str = typer.Option(None, "--format", help="its format (default: detected from the header by kvmkit)"),
) -> None:
    """Format, virtual and actual size and backing chain (qemu-img info, format always explicit)."""
    from kvmkit.images import qemu_img

    emit(qemu_img.summary(qemu_img.info(file, format_, chain=True)), _show_info)


@app.command()
def convert(
    src: str = typer.Argument(...), dst: str = typer.Argument(...),
    format_: str = typer.Option(..., "--format", help="qcow2|raw: the format of DST"),
    src_format: str = typer.Option(None, "--src-format", help="SRC's format (default: detected by kvmkit)"),
    vm: str = typer.Option(None, "--vm", help="SRC is a disk of this shut-off VM: switch the VM to DST"),
) -> None:
    """Convert an image (qemu-img convert -p, formats explicit); --vm also repoints the VM's disk."""
    from kvmkit.cli.output import progress
    from kvmkit.images import qemu_img

    qemu_img.check_format(format_)
    with progress(f"convert to {format_}", 100, unit="percent") as advance:
        if vm:
            from kvmkit.cli.context import connection
            from kvmkit.service.storage.disk_convert import convert_vm_disk

            result = convert_vm_disk(connection(), vm, src, dst, format_, progress=advance)
        else:
            fmt = src_format or qemu_img.probe_format(src)
            qemu_img.convert(src, dst, fmt, format_, progress=advance)
            result = {"old": src, "new": dst, "old_format": fmt, "format": format_}
    emit(result, lambda d: console().print(f"{d['old']} ({d['old_format']}) -> {d['new']} ({d['format']})"
                                           + (f"; VM {d['vm']} now uses it" if d.get("vm") else "")))
