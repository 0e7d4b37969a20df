"""``kvmkit guest inspect|ls|cat|df|copy-in|copy-out VM ...``: a shut-off VM's guest file systems (libguestfs)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from kvmkit.cli.context import connection, settings
from kvmkit.cli.output import console, emit, table

app = typer.Typer(help="a shut-off VM's guest file systems: inspect, ls, cat, df, copy-in, copy-out",
                  no_args_is_help=True, add_completion=False)

READONLY = typer.Option(False, "--readonly", help="allowed on a running VM: read its disks as they are now")


@app.callback()
def _group() -> None:
    """Guest disks offline, through libguestfs (each command starts a small appliance VM: 20-60 s under TCG).
    The VM must be shut off; --readonly reads a running VM's disks. docs/guests.md."""


def _busy(what: str):  # a spinner on stderr while the appliance works
    return console(stderr=True).status(what)


@app.command()
def inspect(vm: str = typer.Argument(..., help="the VM"), readonly: bool = READONLY) -> None:
    """The guest's operating system: distribution, version, hostname, mount points, file systems."""
    from kvmkit.service.guests.offline import inspect as run

    with _busy(f"inspecting the disks of {vm}"):
        res = run(connection(), vm, readonly=readonly)

    def show(r: dict[str, Any]) -> None:
        out = console()
        if not r["operating_systems"]:
            out.print(f"no operating system found on the disks of {vm}")
        for o in r["operating_systems"]:
            out.print(f"[bold]{o.get('product_name') or o.get('distro')}[/] ({o.get('name')} {o.get('distro')} "
                      f"{o.get('major_version')}.{o.get('minor_version')}, {o.get('arch')}) on {o.get('root')}")
            out.print(f"  hostname  {o.get('hostname')}")
            out.print(f"  packages  {o.get('package_format')} / {o.get('package_management')}")
            for mnt, dev in o["mountpoints"].items():
                out.print(f"  mount     {mnt} <- {dev}")

    emit(res, show)


@app.command()
def ls(vm: str = typer.Argument(..., help="the VM"), path: str = typer.Argument("/", help="guest path"),
       recursive: bool = typer.Option(False, "--recursive", "-R", help="the whole tree below PATH"),
       readonly: bool = READONLY) -> None:
    """List a guest directory: type, mode, size, owner, modification time."""
    from kvmkit.service.guests.offline import ls as run

    with _busy(f"listing {path} in {vm}"):
        res = run(connection(), vm, path, recursive=recursive, readonly=readonly)
    emit(res, lambda r: table(r["entries"], ["mode", "type", "uid", "gid", "size", "mtime",
                                             "path" if recursive else "name"]))


@app.command()
def cat(vm: str = typer.Argument(..., help="the VM"), path: str = typer.Argument(..., help="guest file"),
        readonly: bool = READONLY) -> None:
    """Print a guest file (its bytes as they are; with --json: size, sha256 and the text)."""
    from kvmkit.service.guests.offline import cat as run

    with tempfile.TemporaryDirectory(prefix="kvmkit-guest-") as tmp:
        dest = Path(tmp) / "file"
        with _busy(f"reading {path} from {vm}"):
            res = run(connection(), vm, path, dest, readonly=readonly)
        data = dest.read_bytes()
    if settings.json:
        emit({**res, "content": data.decode("utf-8", errors="replace")})
        return
    sys.stdout.buffer.write(data)
    sys.stdout.flush()


@app.command()
def df(vm: str = typer.Argument(..., help="the VM"), readonly: bool = READONLY) -> None:
    """Size and use of each file system on the VM's disks."""
    from kvmkit.service.guests.offline import df as run

    with _busy(f"measuring the file systems of {vm}"):
        res = run(connection(), vm, readonly=readonly)
    emit(res, lambda r: table(r["filesystems"], ["filesystem", "size_kib", "used_kib", "available_kib",
                                                 "use_percent"]))


@app.command("copy-in")
def copy_in(vm: str = typer.Argument(..., help="the VM (shut off)"),
            paths: list[str] = typer.Argument(..., metavar="LOCAL... GUESTDIR",
                                              help="host files or directories, then the guest directory")) -> None:
    """Copy host files or directories into a guest directory (recursively; names and modes kept)."""
    from kvmkit.errors import InvalidInput
    from kvmkit.service.guests.offline import copy_in as run

    if len(paths) < 2:
        raise InvalidInput("copy-in needs at least one local path and the guest directory",
                           hint="e.g. kvmkit guest copy-in VM ./motd /etc")
    with _busy(f"copying into {vm}:{paths[-1]}"):
        res = run(connection(), vm, paths[:-1], paths[-1])
    emit(res, lambda r: console().print("\n".join(f"copied {p}" for p in r["copied"])))


@app.command("copy-out")
def copy_out(vm: str = typer.Argument(..., help="the VM"),
             paths: list[str] = typer.Argument(..., metavar="GUESTPATH... LOCALDIR",
                                               help="guest files or directories, then the host directory"),
             readonly: bool = READONLY) -> None:
    """Copy guest files or directories (recursively) into a host directory."""
    from kvmkit.errors import InvalidInput
    from kvmkit.service.guests.offline import copy_out as run

    if len(paths) < 2:
        raise InvalidInput("copy-out needs at least one guest path and the local directory",
                           hint="e.g. kvmkit guest copy-out VM /etc/hostname .")
    with _busy(f"copying out of {vm}"):
        res = run(connection(), vm, paths[:-1], paths[-1], readonly=readonly)
    emit(res, lambda r: console().print("\n".join(f"copied {p}" for p in r["copied"])))
