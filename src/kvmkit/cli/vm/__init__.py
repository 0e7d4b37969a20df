"""``kvmkit vm ...``: the VM commands, gathered from one module per area."""

from __future__ import annotations

import typer

from kvmkit.cli.registry import register_all

app = typer.Typer(help="virtual machines: create, list, lifecycle, resources, consoles", no_args_is_help=True,
                  add_completion=False)


@app.callback()
def _group() -> None:
    """virtual machines: create, list, show, lifecycle, resources, devices, consoles, copies"""


register_all(app, [
    "vm.define",     # create, list, show          (spec -> XML -> define)
    "vm.lifecycle",  # start, shutdown, reboot, destroy, suspend, resume, delete, rename
    "vm.resources",  # set (vcpus, memory, autostart), stats, console
    "vm.devices",    # disk attach/detach, nic attach/detach
    "vm.pin",        # pin (vcpupin, emulatorpin, --auto)
    "vm.copy",       # clone, backup, restore
    "vm.xml",        # xml (read, --replace)
    "vm.migrate",    # migrate
    "vm.metrics",    # metrics (the history kvmkit serve records)
    "vm.imports",    # import (OVA/OVF, VMDK, VHD/VHDX, VDI, QCOW2, raw: service/v2v)
    "vm.agent",      # exec, set-password, eject-seed (guest agent)
])
