"""``kvmkit vm import FILE``: a VM from another hypervisor (OVA/OVF, VMDK, VHD/VHDX, VDI, QCOW2, raw)."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, progress
from kvmkit.errors import InvalidInput


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        file: str = typer.Argument(None, help="the .ova, .ovf or disk image (its format is read from its bytes)"),
        volume: str = typer.Option(None, "--volume", help="import a pool volume instead of FILE: POOL/VOLUME"),
        name: str = typer.Option(None, "--name", help="VM name (default: the OVF's name, else the file's)"),
        pool: str = typer.Option("default", "--pool", help="pool of the converted disks (a dir pool)"),
        os_name: str = typer.Option(None, "--os", help="guest OS (default: what inspecting the disks finds)"),
        network: str = typer.Option("default", "--network", help="libvirt network of the NICs, or none"),
        via: str = typer.Option("auto", "--via", help="auto | kvmkit | virt-v2v (auto: virt-v2v for Windows and "
                                "Linux guests with a boot loader, kvmkit's own convert otherwise)"),
        virtio_win: str = typer.Option(None, "--virtio-win", help="virtio-win ISO: virt-v2v installs the Windows "
                                       "drivers from it"),
        memory: str = typer.Option(None, "--memory", help="memory (default: the OVF's, else the OS's)"),
        vcpus: int = typer.Option(None, "--vcpus", help="vCPUs (default: the OVF's, else the OS's)"),
        start: bool = typer.Option(False, "--start", help="start the VM once defined"),
    ) -> None:
        """Import a VM: check the package, convert its disks into a pool, inspect the guest, define the VM.
        Refused packages leave nothing behind."""
        import os

        from kvmkit.cli.context import settings
        from kvmkit.service.v2v.importer import import_vm
        from kvmkit.spec.vm_import import parse_import

        if (file is None) == (volume is None):
            raise InvalidInput("give FILE or --volume POOL/VOLUME (one of them)",
                               hint="e.g. kvmkit vm import web.ova, or kvmkit vm import --volume default/web.ova")
        if volume is not None:
            vpool, _, vname = volume.partition("/")
            if not vname:
                raise InvalidInput(f"--volume {volume!r} is not POOL/VOLUME", hint="e.g. --volume default/web.ova")
            source: dict[str, Any] = {"pool": vpool, "volume": vname}
        else:
            source = {"path": os.path.abspath(os.path.expanduser(file))}
        data: dict[str, Any] = {"source": source, "name": name, "pool": pool, "os": os_name, "via": via,
                                "network": None if network == "none" else network, "start": start,
                                "virtio_win": os.path.abspath(os.path.expanduser(virtio_win)) if virtio_win else None,
                                "memory_mib": memory, "vcpus": vcpus}
        spec = parse_import({k: v for k, v in data.items() if v is not None or k == "network"})
        err = console(stderr=True)
        with progress("importing", total=100, unit="percent") as advance:
            def step(_name: str, percent: float | None, message: str) -> None:
                if percent is not None:
                    advance(percent)
                if message and not settings.json and not _name.endswith("-progress"):
                    from rich.markup import escape

                    if message.startswith("warning: "):
                        err.print(f"[yellow]warning:[/] {escape(message[9:])}")
                    else:
                        err.print(f"[dim]{escape(message)}[/]")

            result = import_vm(connection(), spec, step=step)
        emit(result, _show)


def _show(r: dict[str, Any]) -> None:
    from rich.markup import escape

    out = console()
    g = r.get("guest") or {}
    found = (f"{g.get('distro') or ''} {g.get('product') or ''} ({g.get('os_type')}, firmware "
             f"{g.get('firmware') or 'unknown'}, boot loader {g.get('bootloader') or 'none'})").strip() \
        if g.get("found") else "no OS found"
    out.print(f"imported [bold]{escape(r['name'])}[/] from {escape(r['source'])} ({r['kind']}) via {r['path']}: "
              f"{escape(found)}")
    for d in r["disks"]:
        out.print(f"  disk   {escape(d['source'])} [{d['format']}] -> {r['pool']}/{d['volume']}")
    for mac in r.get("macs", []):
        out.print(f"  nic    {mac}")
    if r.get("os"):
        out.print(f"  os     {r['os']['short_id']} ({r['os']['name']})")
    out.print(f"  state  {r.get('state')}")
    for note in r.get("notes", []):
        out.print(f"  [dim]{escape(note)}[/]")
    for warning in r.get("warnings", []):
        console(stderr=True).print(f"[yellow]warning:[/] {escape(warning)}")
