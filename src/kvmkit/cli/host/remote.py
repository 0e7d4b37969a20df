"""``kvmkit host add|list|show|remove|maintenance|set``: the inventory of hosts (docs/hosts.md).

The inventory is in the database (``--db`` / KVMKIT_DB). The local host (``local``, the --connect URI) is
always there; other hosts are libvirt URIs (qemu+ssh://, qemu+tls://; qemu+tcp:// on closed test networks).
"""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.output import console, emit, table


def _mib(n: int | None) -> str:
    return "" if n is None else (f"{n / 1024:.1f}G" if n >= 1024 else f"{n}M")


def _show_hosts(rows: list[dict[str, Any]]) -> None:
    view = [{**r, "memory": f"{_mib(r['free_memory_mib'])}/{_mib(r['memory_mib'])}" if r["reachable"] else "",
             "vms": "" if r["vms"] is None else f"{r['vms_running']}/{r['vms']}",
             "versions": f"{r['libvirt_version']}/{r['qemu_version']}" if r["reachable"] else "",
             "guest": r["virt_type"] or ""} for r in rows]
    table(view, ["name", "state", "uri", "versions", "cpu_model", "cores", "memory", "vms", "guest"])
    out = console()
    for r in rows:
        if r["error"]:
            out.print(f"[yellow]{r['name']}: {r['error']}[/]")
        elif r["virt_type_reason"]:
            out.print(f"[dim]{r['name']}: {r['virt_type']} ({r['virt_type_reason']})[/]")


def _show_one(r: dict[str, Any]) -> None:
    _show_hosts([r])


def register(app: typer.Typer) -> None:
    @app.command("add")
    def add(
        name: str = typer.Argument(..., help="the host's name in kvmkit (--host NAME)"),
        uri: str = typer.Argument(..., help="its libvirt URI, e.g. qemu+ssh://root@host2/system"),
        ssh_key: str = typer.Option(None, "--ssh-key", help="private key file for qemu+ssh"),
        max_memory: str = typer.Option(None, "--max-memory", help="memory VMs may use there (e.g. 64G): "
                                       "placement counts what is left of it"),
        cpu_overcommit: float = typer.Option(None, "--cpu-overcommit", help="vCPUs per physical core allowed "
                                             "there (default 1, as the seeds advise; KVMKIT_CPU_OVERCOMMIT)"),
        check: bool = typer.Option(True, "--check/--no-check", help="refuse a host whose libvirt does not answer"),
    ) -> None:
        """Add a host to the inventory (after checking that its libvirt answers)."""
        from kvmkit.cli.context import hosts
        from kvmkit.service.hosts.manage import add_host
        from kvmkit.spec.host import HostSpec

        spec = HostSpec(name=name, uri=uri, ssh_key=ssh_key, max_memory=max_memory, cpu_overcommit=cpu_overcommit)
        res = add_host(hosts(store=True), spec, check=check)
        emit(res, lambda r: console().print(f"host [bold]{r['name']}[/] added ({r['uri']})"))

    @app.command("list")
    def list_(probe: bool = typer.Option(True, "--probe/--no-probe", help="the guest type as probed on each host "
                                         "(the first time boots a tiny guest there: seconds)")) -> None:
        """Every host: state (up/down/maintenance), libvirt/QEMU versions, CPU, cores, memory free, VMs, and the
        guest type (kvm/qemu) as probed on that host. Hosts are asked at once; a dead one is listed as down."""
        from kvmkit.cli.context import hosts
        from kvmkit.service.hosts.manage import host_rows

        emit(host_rows(hosts(store=True), probe=probe), _show_hosts)

    @app.command("show")
    def show(name: str = typer.Argument(..., help="host name (local: the --connect host)")) -> None:
        """One host of the inventory, asked now."""
        from kvmkit.cli.context import hosts
        from kvmkit.service.hosts.manage import show_host

        emit(show_host(hosts(store=True), name), _show_one)

    @app.command("remove")
    def remove(name: str = typer.Argument(..., help="host name"),
               force: bool = typer.Option(False, "--force", help="forget it even with VMs (they stay on it)")) -> None:
        """Forget a host (refused while it has VMs, or when it cannot be asked, unless --force). Its VMs are
        not touched."""
        from kvmkit.cli.context import hosts
        from kvmkit.service.hosts.manage import remove_host

        emit(remove_host(hosts(store=True), name, force=force),
             lambda r: console().print(f"host [bold]{r['name']}[/] removed from the inventory"))

    @app.command("maintenance")
    def maintenance(name: str = typer.Argument(..., help="host name (local too)"),
                    mode: str = typer.Argument(..., help="on | off")) -> None:
        """A host in maintenance gets no new VMs from placement; its VMs keep running and stay manageable."""
        from kvmkit.cli.context import hosts
        from kvmkit.errors import InvalidInput
        from kvmkit.service.hosts.manage import set_maintenance

        if mode not in ("on", "off"):
            raise InvalidInput(f"maintenance mode must be on or off, not {mode!r}",
                               hint=f"kvmkit host maintenance {name} on")
        emit(set_maintenance(hosts(store=True), name, mode == "on"),
             lambda r: console().print(f"host [bold]{r['name']}[/] maintenance {'on' if r['maintenance'] else 'off'}"))

    @app.command("set")
    def set_(name: str = typer.Argument(..., help="host name (local too)"),
             max_memory: str = typer.Option(None, "--max-memory", help="memory VMs may use there; 0 clears it"),
             cpu_overcommit: float = typer.Option(None, "--cpu-overcommit",
                                                  help="vCPUs per physical core; 0: the global default")) -> None:
        """Placement limits of a host."""
        from kvmkit.cli.context import hosts
        from kvmkit.service.hosts.manage import set_limits
        from kvmkit.spec.host import HostLimits

        res = set_limits(hosts(store=True), name, HostLimits(max_memory=max_memory, cpu_overcommit=cpu_overcommit))
        emit(res, lambda r: console().print(f"host [bold]{r['name']}[/]: max memory "
                                            f"{_mib(r['max_memory_mib']) or 'none'}, vCPU overcommit "
                                            f"{r['cpu_overcommit'] or 'default'}"))
