"""``kvmkit pool ...``: storage pools (dir, fs, netfs, logical, iscsi)."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, table

app = typer.Typer(help="storage pools: dir, fs, netfs, logical, iscsi", no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """storage pools: dir, fs, netfs, logical, iscsi"""


def _gib(n: int | None) -> str:
    return "" if n is None else f"{n / 1024**3:.2f} GiB"


def _show(d: dict[str, Any]) -> None:
    out = console()
    out.print(f"[bold]{d['name']}[/] ({d['type']}) {d['state']}, autostart {'on' if d['autostart'] else 'off'}")
    out.print(f"  target:    {d['target']}")
    if d["source"]:
        out.print("  source:    " + ", ".join(f"{k}={v}" for k, v in d["source"].items()))
    out.print(f"  capacity:  {_gib(d['capacity'])}\n  allocation: {_gib(d['allocation'])}\n"
              f"  available: {_gib(d['available'])}\n  volumes:   {d['volumes'] if d['volumes'] is not None else '-'}")


@app.command("list")
def list_() -> None:
    """All pools with capacity, allocation and available space."""
    from kvmkit.service.storage.pools import list_pools

    rows = list_pools(connection())

    def human(rows: list[dict[str, Any]]) -> None:
        view = [{**r, "capacity": _gib(r["capacity"]), "allocation": _gib(r["allocation"]),
                 "available": _gib(r["available"]), "autostart": "on" if r["autostart"] else "off"} for r in rows]
        table(view, ["name", "type", "state", "autostart", "capacity", "allocation", "available", "target"])

    emit(rows, human)


@app.command()
def define(
    name: str = typer.Argument(...),
    type_: str = typer.Option(..., "--type", help="dir|fs|netfs|logical|iscsi"),
    target: str = typer.Option(None, "--target", help="directory (dir, fs, netfs) or device directory"),
    source_dev: str = typer.Option(None, "--source-dev", help="fs: block device; logical: PV device"),
    source_host: str = typer.Option(None, "--source-host", help="netfs/iscsi: server host name"),
    source_path: str = typer.Option(None, "--source-path", help="netfs: exported dir; iscsi: target IQN"),
    source_name: str = typer.Option(None, "--source-name", help="logical: volume group name (default: NAME)"),
    source_format: str = typer.Option(None, "--source-format", help="fs: ext4 (default), xfs, auto; netfs: nfs"),
    build: bool = typer.Option(False, "--build", help="also build it (mkdir, mkfs, vgcreate)"),
    start: bool = typer.Option(False, "--start", help="also start it"),
    autostart: bool = typer.Option(False, "--autostart", help="also mark it autostart"),
) -> None:
    """Define a pool (then `pool build` and `pool start`, or pass --build --start)."""
    from kvmkit.service.storage import pools
    conn = connection()
    d = pools.define_pool(conn, name, type_, target=target, source_dev=source_dev, source_host=source_host,
                          source_path=source_path, source_name=source_name, source_format=source_format)
    try:
        if build:
            d = pools.build_pool(conn, name)
        if start:
            d = pools.start_pool(conn, name)
        if autostart:
            d = pools.set_autostart(conn, name, True)
    except Exception:
        pools.rollback_define(conn, name)  # nothing half-made
        raise
    emit(d, _show)


def _simple(verb: str, fn_name: str, help_: str) -> None:
    def command(name: str = typer.Argument(...)) -> None:
        from kvmkit.service.storage import pools
        d = getattr(pools, fn_name)(connection(), name)
        emit(d, _show if "type" in d else lambda x: console().print(f"pool {x['name']}: done"))

    command.__doc__ = help_
    app.command(verb)(command)


@app.command("build")
def build_(name: str = typer.Argument(...),
           overwrite: bool = typer.Option(False, "--overwrite", help="format the device even if it has data")) -> None:
    """Make the pool's storage: mkdir (dir), mkfs (fs), vgcreate (logical)."""
    from kvmkit.service.storage.pools import build_pool

    emit(build_pool(connection(), name, overwrite=overwrite), _show)


@app.command("autostart")
def autostart_(name: str = typer.Argument(...), off: bool = typer.Option(False, "--off", help="turn it off")) -> None:
    """Start the pool with libvirtd (--off: not)."""
    from kvmkit.service.storage.pools import set_autostart

    emit(set_autostart(connection(), name, not off), _show)


_simple("start", "start_pool", "Start (activate) a pool.")
_simple("stop", "stop_pool", "Stop (deactivate) a pool; its volumes stay.")
_simple("refresh", "refresh_pool", "Rescan the pool's volumes.")
_simple("info", "pool_info", "Show a pool: type, state, source, target, capacity, allocation, available.")
_simple("delete", "delete_pool", "Delete a stopped pool's storage (rmdir, vgremove); refused while VMs use it.")
_simple("undefine", "undefine_pool", "Forget a stopped pool (its storage stays).")
