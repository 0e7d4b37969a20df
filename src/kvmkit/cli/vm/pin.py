"""``kvmkit vm pin``: vcpupin and emulatorpin, live and persistent, or automatic within one NUMA node."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit
from kvmkit.errors import InvalidInput


def _human(d: dict[str, Any]) -> None:
    out = console()
    where = " + ".join(w for w in ("live", "config") if d.get(w))
    node = f" in NUMA node {d['node']}" if "node" in d else ""
    out.print(f"pinned {d['name']}{node} [{where}]")
    for vcpu, cpus in d["vcpupin"].items():
        out.print(f"  vCPU {vcpu} -> host CPUs {cpus}")
    out.print(f"  emulator -> host CPUs {d['emulatorpin']}")
    if d.get("numatune"):
        out.print(f"  memory -> NUMA node {d['numatune']['nodeset']} (strict, from the next start)")
    if d.get("warning"):
        out.print(f"[yellow]warning:[/] {d['warning']}")


def register(app: typer.Typer) -> None:
    @app.command("pin")
    def pin(
        name: str = typer.Argument(..., help="VM name"),
        vcpu: list[int] = typer.Option([], "--vcpu", help="vCPU number (repeat, each followed by --cpus)"),
        cpus: list[str] = typer.Option([], "--cpus", help="host CPU list for the preceding --vcpu, e.g. 2-3"),
        emulator: str | None = typer.Option(None, "--emulator", help="host CPU list for QEMU's emulator threads"),
        auto: bool = typer.Option(False, "--auto", help="pick CPUs in the NUMA node with the most free memory"),
        live: bool = typer.Option(False, "--live", help="change the running VM"),
        config: bool = typer.Option(False, "--config", help="change the saved definition"),
    ) -> None:
        """Pin vCPUs and emulator threads to host CPUs. Without --live/--config: the running VM and its
        definition (when it has one). Without options: show the current pinning."""
        from kvmkit.service.vms import pinning
        if len(vcpu) != len(cpus):
            raise InvalidInput(f"{len(vcpu)} --vcpu but {len(cpus)} --cpus", hint="give --vcpu V --cpus LIST pairs")
        lc = (None, None) if not (live or config) else (live, config)
        if auto:
            if vcpu or emulator:
                raise InvalidInput("--auto chooses the CPUs itself", hint="drop --vcpu/--cpus/--emulator or --auto")
            emit(pinning.auto_pin(connection(), name, live=lc[0], config=lc[1]), _human)
        elif vcpu or emulator is not None:
            emit(pinning.pin(connection(), name, vcpus=dict(zip(vcpu, cpus, strict=True)), emulator=emulator,
                             live=lc[0], config=lc[1]), _human)
        else:
            dom = pinning._lookup(connection(), name)
            emit({"name": name, **pinning.pin_info(dom)}, _human)
