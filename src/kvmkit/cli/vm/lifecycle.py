"""``kvmkit vm start|shutdown|reboot|destroy|suspend|resume|delete|rename``."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit


def _said(data: dict[str, Any]) -> None:
    console().print(f"VM [bold]{data['name']}[/]: {data['action']} done, now {data['state']}")


def register(app: typer.Typer) -> None:
    @app.command()
    def start(name: str = typer.Argument(..., help="VM name")) -> None:
        """Boot a shut-off VM (restores its managed-save image if it has one)."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        emit(vm_lifecycle.start(connection(), name), _said)

    @app.command()
    def shutdown(
        name: str = typer.Argument(..., help="VM name"),
        timeout: float = typer.Option(60, "--timeout", help="seconds to wait for the guest to power off"),
        force: bool = typer.Option(False, "--force", help="power it off (destroy) if it has not stopped in time"),
    ) -> None:
        """Press the ACPI power button and wait until the VM is shut off."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        def human(d: dict[str, Any]) -> None:
            how = {"forced": "powered off after the timeout (--force)",
                   "agent": "shut down by the guest agent (the guest ignored the ACPI power button)"}.get(
                d.get("method", ""), "shut down by the guest")
            console().print(f"VM [bold]{d['name']}[/]: {how} in {d['seconds']} s")

        with console(stderr=True).status(f"waiting up to {timeout:g} s for {name} to shut down"):
            result = vm_lifecycle.shutdown(connection(), name, timeout=timeout, force=force)
        emit(result, human)

    @app.command()
    def reboot(name: str = typer.Argument(..., help="VM name")) -> None:
        """Ask the guest to reboot (ACPI or guest agent)."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        emit(vm_lifecycle.reboot(connection(), name), _said)

    @app.command()
    def destroy(name: str = typer.Argument(..., help="VM name")) -> None:
        """Power the VM off at once (pull the plug); its definition and disks stay."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        emit(vm_lifecycle.destroy(connection(), name), _said)

    @app.command()
    def suspend(name: str = typer.Argument(..., help="VM name")) -> None:
        """Pause a running VM (it keeps its memory)."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        emit(vm_lifecycle.suspend(connection(), name), _said)

    @app.command()
    def resume(name: str = typer.Argument(..., help="VM name")) -> None:
        """Continue a paused VM."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        emit(vm_lifecycle.resume(connection(), name), _said)

    @app.command()
    def delete(
        name: str = typer.Argument(..., help="VM name"),
        storage: bool = typer.Option(False, "--storage", help="also delete the disks only this VM uses"),
        force: bool = typer.Option(False, "--force", help="power the VM off first if it is running"),
    ) -> None:
        """Undefine the VM (with NVRAM, managed-save and snapshot metadata); --storage deletes its disks but
        keeps any disk another VM uses."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        def human(d: dict[str, Any]) -> None:
            from rich.markup import escape

            out = console()
            out.print(f"VM [bold]{d['name']}[/] deleted")
            for path in d["deleted"]:
                out.print(f"  deleted {escape(path)}")
            for kept in d["kept"]:
                out.print(f"  [yellow]kept[/] {escape(kept['path'])}: {escape(kept['reason'])}")

        emit(vm_lifecycle.delete(connection(), name, storage=storage, force=force), human)

    @app.command()
    def rename(old: str = typer.Argument(..., help="current VM name"),
               new: str = typer.Argument(..., help="new VM name")) -> None:
        """Rename a shut-off VM; disks, UUID and configuration stay."""
        from kvmkit.service.vms import lifecycle as vm_lifecycle
        emit(vm_lifecycle.rename(connection(), old, new),
             lambda d: console().print(f"VM [bold]{d['old_name']}[/] is now [bold]{d['name']}[/]"))
