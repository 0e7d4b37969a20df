"""``kvmkit vm set``, ``kvmkit vm stats`` and ``kvmkit vm console``."""

from __future__ import annotations

import sys
from typing import Any

import typer

from kvmkit.cli.context import connection, settings
from kvmkit.cli.output import console, emit, table
from kvmkit.errors import InvalidInput


def _live_config(live: bool, config: bool) -> tuple[bool | None, bool | None]:
    """Neither flag: the service default (live+config when running, config when stopped)."""
    return (None, None) if not (live or config) else (live, config)


def _human_set(d: dict[str, Any]) -> None:
    from rich.markup import escape

    out = console()
    for change in d["changes"]:
        where = " + ".join(w for w in ("live", "config") if change.get(w)) or "definition"
        if change["action"] == "set vcpus":
            extra = f" (max raised to {change['max_vcpus_raised_to']})" if change["max_vcpus_raised_to"] else ""
            out.print(f"vCPUs of {d['name']}: {change['vcpus']} ({where}){extra}")
        elif change["action"] == "set memory":
            raised = change["max_memory_raised_to_mib"]
            extra = f" (max raised to {raised} MiB)" if raised else ""
            out.print(f"memory of {d['name']}: {change['memory_mib']} MiB ({where}){extra}")
        elif change["action"] == "set boot":
            order = " → ".join(change["boot"])
            out.print(f"boot order of {d['name']}: {order} (definition: applies when the VM next starts"
                      + ("; the running VM keeps its order until then)" if change["running"] else ")"))
            for warning in change["warnings"]:
                out.print(f"[yellow]{escape(warning)}[/]")
        else:
            out.print(f"autostart of {d['name']}: {'on' if change['autostart'] else 'off'}")
    if any(c.get("max_vcpus_raised_to") or c.get("max_memory_raised_to_mib") for c in d["changes"]):
        out.print("[yellow]a raised maximum takes effect at the next start[/]")


def _boot_list(value: str | None) -> list[str] | None:
    """'cdrom,hd' -> ['cdrom', 'hd'] (the service checks the names)."""
    return None if value is None else [b.strip() for b in value.split(",") if b.strip()]


def _parse_mib(value: str) -> int:
    from kvmkit.spec.common import parse_size_mib

    return parse_size_mib(value, "--memory")


def register(app: typer.Typer) -> None:
    @app.command("set")
    def set_(
        name: str = typer.Argument(..., help="VM name"),
        vcpus: int | None = typer.Option(None, "--vcpus", help="number of vCPUs (live: up to the max)"),
        memory: str | None = typer.Option(None, "--memory", help="memory, e.g. 512M or 1G (live: balloon up to max)"),
        live: bool = typer.Option(False, "--live", help="change the running VM"),
        config: bool = typer.Option(False, "--config", help="change the definition (next start); may raise the max"),
        autostart: str | None = typer.Option(None, "--autostart", help="on|off: start with the host"),
        boot: str | None = typer.Option(None, "--boot", help="boot order, e.g. hd or cdrom,hd (hd, cdrom, network); "
                                        "the definition only: applies when the VM next starts"),
    ) -> None:
        """Change vCPUs, memory, autostart and the boot order. Without --live/--config: both when running, else
        the definition (the boot order is always the definition's)."""
        from kvmkit.service.vms import resources as vm_resources
        if autostart is not None and autostart not in ("on", "off"):
            raise InvalidInput(f"invalid --autostart '{autostart}': use on or off")
        size = _parse_mib(memory) if memory is not None else None
        lv, cf = _live_config(live, config)
        result = vm_resources.set_resources(connection(), name, vcpus=vcpus, memory_mib=size,
                                            autostart=None if autostart is None else autostart == "on",
                                            boot=_boot_list(boot), live=lv, config=cf)
        emit(result, _human_set)

    @app.command()
    def stats(name: str | None = typer.Argument(None, help="VM name (default: every VM)")) -> None:
        """CPU time, vCPUs, memory/balloon, block and network counters (one bulk libvirt call)."""
        from kvmkit.service.vms import resources as vm_resources
        def human(rows: list[dict[str, Any]]) -> None:
            flat = [{
                "name": r["name"], "state": r["state"], "vcpus": r["vcpus"],
                "cpu_s": None if r["cpu_time_ns"] is None else f"{r['cpu_time_ns'] / 1e9:.1f}",
                "mem_mib": None if r["balloon_current_kib"] is None else r["balloon_current_kib"] // 1024,
                "rss_mib": None if r["balloon_rss_kib"] is None else r["balloon_rss_kib"] // 1024,
                "disk_rd/wr_kib": f"{sum(b['rd_bytes'] or 0 for b in r['block']) // 1024}/"
                                  f"{sum(b['wr_bytes'] or 0 for b in r['block']) // 1024}",
                "net_rx/tx_kib": f"{sum(n['rx_bytes'] or 0 for n in r['net']) // 1024}/"
                                 f"{sum(n['tx_bytes'] or 0 for n in r['net']) // 1024}",
            } for r in rows]
            table(flat, ["name", "state", "vcpus", "cpu_s", "mem_mib", "rss_mib", "disk_rd/wr_kib", "net_rx/tx_kib"])

        emit(vm_resources.stats(connection(), name), human)

    @app.command("console")
    def console_(
        name: str = typer.Argument(..., help="VM name"),
        log: bool = typer.Option(False, "--log", help="print the serial log file instead of attaching"),
        tail: int | None = typer.Option(None, "--tail", help="with --log: only the last N lines"),
        force: bool = typer.Option(False, "--force", help="take the console over from another client"),
        spice_file: str | None = typer.Option(None, "--spice-file", help="write remote-viewer's .vv file for the "
                                              "VM's SPICE display (a fresh password, valid 120 s) to this path"),
    ) -> None:
        """Attach to the VM's serial console (leave with Ctrl-]), print its serial log with --log, or write a
        SPICE file for remote-viewer with --spice-file (the VNC console is in the portal: docs/console.md)."""
        from kvmkit.service.vms import console as vm_console
        if spice_file:
            _write_spice_file(name, spice_file)
            return
        if log:
            emit(vm_console.read_log(connection(), name, tail=tail), lambda d: print(d["text"], end=""))
            return
        if settings.json:
            raise InvalidInput("an interactive console has no JSON form", hint="use --log --json to read the log")
        vm_console.ensure_event_loop()  # must precede opening the connection
        conn = connection()
        err = console(stderr=True)
        err.print(f"[dim]connected to {name}'s serial console; leave with Ctrl-][/]")
        in_fd, out_fd = sys.stdin.fileno(), sys.stdout.fileno()
        saved = None
        if sys.stdin.isatty():
            import termios
            import tty

            saved = termios.tcgetattr(in_fd)
            tty.setraw(in_fd, termios.TCSANOW)  # TCSANOW: keep what was typed ahead
        try:
            result = vm_console.attach(conn, name, in_fd, out_fd, force=force)
        finally:
            if saved is not None:
                import termios

                termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
        err.print(f"\n[dim]console closed ({result['ended']})[/]")


def _write_spice_file(name: str, path: str) -> None:
    """``vm console NAME --spice-file F``: the same file as GET /api/v1/vms/NAME/console/spice.vv (mode 0600:
    it holds a password); prints where and how to connect, never the password."""
    import os

    from kvmkit.service.vms.graphics_console import spice_file

    vv = spice_file(connection(), name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(vv["text"])
    data = {"name": name, "file": os.path.abspath(path), "host": vv["host"], "port": vv["port"],
            "tls_port": vv["tls_port"], "tunnel": vv["tunnel"], "expires_at": vv["expires_at"]}

    def human(d: dict[str, Any]) -> None:
        from rich.markup import escape

        out = console()
        out.print(f"wrote {escape(d['file'])}: open it with remote-viewer before {d['expires_at']}")
        if d["tunnel"]:
            out.print(f"the display listens on loopback: from your machine first run  {escape(d['tunnel'])}")

    emit(data, human)
