"""``kvmkit vm disk attach|detach|resize`` and ``kvmkit vm nic attach|detach``."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit

disk_app = typer.Typer(help="attach, detach or resize a VM's disks (live and/or persistent)", no_args_is_help=True,
                       add_completion=False)
nic_app = typer.Typer(help="attach or detach a VM's network interfaces (live and/or persistent)",
                      no_args_is_help=True, add_completion=False)

LIVE_HELP = "change the running VM (default: when it runs)"
CONFIG_HELP = "change the definition used at next start (default: when it is defined)"


def _lc(live: bool, config: bool) -> tuple[bool | None, bool | None]:
    return (None, None) if not (live or config) else (live, config)


def _where(d: dict[str, Any]) -> str:
    return " + ".join(w for w in ("live", "config") if d.get(w))


@disk_app.callback()
def _disk() -> None:
    """attach, detach or resize a VM's disks (live and/or persistent)"""


@nic_app.callback()
def _nic() -> None:
    """attach or detach a VM's network interfaces (live and/or persistent)"""


@disk_app.command("attach")
def disk_attach(
    name: str = typer.Argument(..., help="VM name"),
    path: str | None = typer.Option(None, "--path", help="image file or block device"),
    pool: str | None = typer.Option(None, "--pool", help="storage pool of --volume"),
    volume: str | None = typer.Option(None, "--volume", help="volume name in --pool"),
    fmt: str = typer.Option(..., "--format", help="image format: raw or qcow2 (always explicit)"),
    target: str | None = typer.Option(None, "--target", help="guest device name, e.g. vdb (default: next free)"),
    bus: str = typer.Option("virtio", "--bus", help="virtio, sata, scsi, ide or usb"),
    cache: str | None = typer.Option(None, "--cache", help="none, writethrough, writeback, directsync, unsafe"),
    readonly: bool = typer.Option(False, "--readonly", help="attach read-only"),
    live: bool = typer.Option(False, "--live", help=LIVE_HELP),
    config: bool = typer.Option(False, "--config", help=CONFIG_HELP),
) -> None:
    """Attach a disk image, block device or pool volume to a VM."""
    from kvmkit.service.vms import devices as vm_devices
    lv, cf = _lc(live, config)
    result = vm_devices.attach_disk(connection(), name, fmt=fmt, path=path, pool=pool, volume=volume, target=target,
                                    bus=bus, cache=cache, readonly=readonly, live=lv, config=cf)
    from rich.markup import escape

    emit(result, lambda d: console().print(f"attached {escape(d['path'])} ({d['format']}) to {d['name']} as "
                                           f"{d['target']} ({_where(d)})"))


@disk_app.command("detach")
def disk_detach(
    name: str = typer.Argument(..., help="VM name"),
    target: str = typer.Argument(..., help="guest device name of the disk, e.g. vdb"),
    live: bool = typer.Option(False, "--live", help=LIVE_HELP),
    config: bool = typer.Option(False, "--config", help=CONFIG_HELP),
    timeout: float = typer.Option(30, "--timeout", help="seconds to wait for the guest to release it"),
) -> None:
    """Detach a disk (its image stays)."""
    from kvmkit.service.vms import devices as vm_devices
    lv, cf = _lc(live, config)
    result = vm_devices.detach_disk(connection(), name, target, live=lv, config=cf, timeout=timeout)
    emit(result, lambda d: console().print(f"detached {d['target']} from {d['name']} ({_where(d)})"))


@disk_app.command("resize")
def disk_resize(
    name: str = typer.Argument(..., help="VM name"),
    target: str = typer.Argument(..., help="guest device name of the disk, e.g. vda"),
    size: str = typer.Argument(..., help="the new size, e.g. 20G"),
    allow_shrink: bool = typer.Option(False, "--allow-shrink", help="allow a smaller size (VM shut off only; data "
                                      "past the new end is lost)"),
) -> None:
    """Resize a VM's disk: live on a running VM (growing only; the guest sees the new size), else its image."""
    from kvmkit.service.vms import disk_resize as vm_disk_resize
    result = vm_disk_resize.resize_disk(connection(), name, target, size, allow_shrink=allow_shrink)

    def human(d: dict[str, Any]) -> None:
        from rich.markup import escape

        from kvmkit.cli.volume import _size as human_size

        out = console()
        if not d["changed"]:
            out.print(f"disk {d['target']} of {d['name']} is {human_size(d['capacity'])} already")
            return
        how = "live: the guest sees the new size" if d["live"] else "image resized; the VM sees it at its next start"
        out.print(f"disk {d['target']} of {d['name']}: {human_size(d['old_capacity'])} -> "
                  f"{human_size(d['capacity'])} ({how})")
        if d["warning"]:
            out.print(f"[yellow]{escape(d['warning'])}[/]")

    emit(result, human)


@nic_app.command("attach")
def nic_attach(
    name: str = typer.Argument(..., help="VM name"),
    network: str | None = typer.Option(None, "--network", help="libvirt network name"),
    bridge: str | None = typer.Option(None, "--bridge", help="host bridge name"),
    model: str = typer.Option("virtio", "--model", help="virtio, e1000e, e1000 or rtl8139"),
    mac: str | None = typer.Option(None, "--mac", help="MAC address (default: a free 52:54:00:xx:xx:xx)"),
    live: bool = typer.Option(False, "--live", help=LIVE_HELP),
    config: bool = typer.Option(False, "--config", help=CONFIG_HELP),
) -> None:
    """Attach a network interface; a MAC used by any other VM on the host is refused."""
    from kvmkit.service.vms import devices as vm_devices
    lv, cf = _lc(live, config)
    result = vm_devices.attach_nic(connection(), name, network=network, bridge=bridge, model=model, mac=mac,
                                   live=lv, config=cf)
    emit(result, lambda d: console().print(f"attached NIC {d['mac']} ({d['model']}) to {d['name']} ({_where(d)})"))


@nic_app.command("detach")
def nic_detach(
    name: str = typer.Argument(..., help="VM name"),
    mac: str = typer.Argument(..., help="MAC address of the NIC"),
    live: bool = typer.Option(False, "--live", help=LIVE_HELP),
    config: bool = typer.Option(False, "--config", help=CONFIG_HELP),
    timeout: float = typer.Option(30, "--timeout", help="seconds to wait for the guest to release it"),
) -> None:
    """Detach a network interface by MAC address."""
    from kvmkit.service.vms import devices as vm_devices
    lv, cf = _lc(live, config)
    result = vm_devices.detach_nic(connection(), name, mac, live=lv, config=cf, timeout=timeout)
    emit(result, lambda d: console().print(f"detached NIC {d['mac']} from {d['name']} ({_where(d)})"))


def register(app: typer.Typer) -> None:
    app.add_typer(disk_app, name="disk")
    app.add_typer(nic_app, name="nic")
