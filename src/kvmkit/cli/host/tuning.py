"""``kvmkit host info|ksm|hugepages|iosched|profile|plan``: see and tune this host's CPUs and memory."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, table, text
from kvmkit.errors import InvalidInput


def _mib(n: int | None) -> str:
    return "?" if n is None else (f"{n / 1024:.1f} GiB" if n >= 1024 else f"{n} MiB")


def _human_ksm(k: dict[str, Any]) -> None:
    out = console()
    if not k.get("available"):
        out.print("KSM: not available on this kernel")
        return
    out.print(f"KSM: run={k['run']} ({k['run_meaning']}), sleep_millisecs={k['sleep_millisecs']}, "
              f"pages_to_scan={k['pages_to_scan']}")
    out.print(f"     pages_shared={k.get('pages_shared')} pages_sharing={k.get('pages_sharing')} "
              f"full_scans={k.get('full_scans')} saved={k['saved_bytes']} bytes "
              f"({k['saved_bytes'] / 1048576:.1f} MiB = pages_sharing x {k['page_size']})")
    for c in k.get("changed", []):
        out.print(f"     changed {c['path']}: {c['before']} -> {c['after']}")


def _human_info(d: dict[str, Any]) -> None:
    out = console()
    out.print(f"[bold]CPUs[/]: {d['cpus']} ({d['sockets']} socket(s) x {d['cores_per_socket']} core(s) x "
              f"{d['threads_per_core']} thread(s))   [bold]memory[/]: {_mib(d['memory']['total_mib'])} total, "
              f"{_mib(d['memory']['available_mib'])} available")
    table([{"node": n["id"], "cpus": n["cpulist"], "memory": _mib(n["memory_mib"]), "free": _mib(n["free_mib"])}
           for n in d["nodes"]], ["node", "cpus", "memory", "free"], title="NUMA nodes")
    out.print("caches: " + ", ".join(f"L{c['level']} {c['type']} {c['size']} (cpus {c['shared_cpus']})"
                                     for c in d["caches"]))
    if d.get("note"):
        out.print(f"[dim]{d['note']}[/]")
    else:
        _human_tunables(d)
    _human_vms(d)


def _human_tunables(d: dict[str, Any]) -> None:
    out = console()
    _human_ksm(d["ksm"])
    thp = d["thp"]
    out.print(f"THP: enabled={thp.get('enabled')} defrag={thp.get('defrag')}")
    out.print("huge pages: " + ", ".join(f"{p['size']}: {p['total']} total, {p['free']} free" for p in d["hugepages"])
              + f"; hugetlbfs mounted at: {', '.join(d['hugetlbfs_mounts']) or 'nowhere'}")
    out.print("IO schedulers: " + ", ".join(f"{s['device']}={s['scheduler']}" for s in d["io_schedulers"]
                                            if s["scheduler"]))


def _human_vms(d: dict[str, Any]) -> None:
    if d["vms"]:
        table([{"vm": v["name"], "vcpus": v["vcpus"], "on cpus": ",".join(map(str, v["vcpu_cpu"].values())),
                "affinity": " ".join(f"{k}:{a}" for k, a in v["vcpu_affinity"].items()),
                "emulator": v["emulator_affinity"], "nodes": ",".join(map(str, v["nodes"]))} for v in d["vms"]],
              ["vm", "vcpus", "on cpus", "affinity", "emulator", "nodes"], title="running VMs")


def _human_profile(d: dict[str, Any]) -> None:
    out = console()
    out.print(f"[bold]{d['name']}[/]: {d['summary']}  (from {' <- '.join(d['sources'])})")
    table([{"key": s["key"], "value": s["value"], "current": "(not on this kernel)" if s["current"] is None
            else s["current"]} for s in d["settings"]], ["key", "value", "current"])
    if d["ignored"]:
        out.print("[dim]not managed by kvmkit: " + ", ".join(d["ignored"]) + "[/]")


def _human_plan(d: dict[str, Any]) -> None:
    out = console()
    t = d["topology"]
    out.print(f"host ({t['source']}): {t['sockets']} socket(s) x {t['cores_per_socket']} cores, "
              f"{_mib(t['memory_mib'])}, nodes: " + ", ".join(f"{n['id']}={n['cpulist']}/{_mib(n['memory_mib'])}"
                                                              for n in t["nodes"]))
    table([{"vm": v["name"], "vcpus": v["vcpus"], "memory": _mib(v["memory_mib"]),
            "nodes": ",".join(map(str, v["nodes"])), "host cpus": v["cpus"],
            "one node": "yes" if v["fits_one_node"] else "NO"} for v in d["vms"]],
          ["vm", "vcpus", "memory", "nodes", "host cpus", "one node"], title="placement")
    for w in d["warnings"]:
        out.print(f"[yellow]warning:[/] {w}")
    out.print("[green]all VMs fit, each inside one NUMA node[/]" if d["fits"] else "[yellow]see the warnings above[/]")
    for v in d["vms"]:
        out.print(f"\n[bold]{v['name']}[/]:")
        text(v["xml"])


def register(app: typer.Typer) -> None:
    @app.command()
    def info() -> None:
        """CPUs, NUMA nodes (CPUs + memory), caches, memory, KSM, THP, huge pages, IO schedulers, VM placement."""
        from kvmkit.host.topology import host_info
        from kvmkit.service.vms.pinning import placements

        conn = connection()
        data = host_info(conn)
        data["vms"] = placements(conn)
        emit(data, _human_info)

    @app.command()
    def ksm(
        enable: bool = typer.Option(False, "--enable", help="run=1: scan and merge identical pages"),
        disable: bool = typer.Option(False, "--disable", help="run=0: stop scanning, keep merged pages"),
        unmerge: bool = typer.Option(False, "--unmerge", help="run=2: stop and split every merged page"),
        sleep_ms: int | None = typer.Option(None, "--sleep-ms", help="sleep_millisecs between scans"),
        pages_to_scan: int | None = typer.Option(None, "--pages-to-scan", help="pages scanned per wake-up"),
    ) -> None:
        """Show KSM state and savings (pages_sharing x page size); enable, disable or unmerge."""
        from kvmkit.host import ksm as ksm_mod

        chosen = [r for r, on in ((1, enable), (0, disable), (2, unmerge)) if on]
        if len(chosen) > 1:
            raise InvalidInput("give only one of --enable, --disable, --unmerge")
        if chosen or sleep_ms is not None or pages_to_scan is not None:
            data = ksm_mod.configure(run=chosen[0] if chosen else None, sleep_ms=sleep_ms, pages_to_scan=pages_to_scan)
        else:
            data = ksm_mod.status()
        emit(data, _human_ksm)

    @app.command()
    def hugepages(
        count: int | None = typer.Option(None, "--count", help="number of huge pages to have"),
        size: str = typer.Option("2M", "--size", help="2M (allocated now) or 1G (boot parameters)"),
    ) -> None:
        """Show huge pages per size; --count N allocates 2 MiB pages now (reports what the kernel gave) or
        prints the kernel command line for 1 GiB pages."""
        from kvmkit.host import hugepages as hp

        if count is None:
            emit({"pools": hp.pools(), "default_size_kib": hp.default_size_kib()},
                 lambda d: table(d["pools"], ["size", "total", "free", "reserved", "surplus", "available"]))
            return
        hp.size_kib(size)

        def human(d: dict[str, Any]) -> None:
            out = console()
            if not d["runtime"]:
                out.print(f"1 GiB pages are reserved at boot. Add to the kernel command line:\n  {d['kernel_cmdline']}")
                out.print(d["instructions"])
                return
            out.print(f"{d['size']} huge pages: requested {d['requested']}, the kernel gave {d['allocated']} "
                      f"(was {d['before']}, {d['free']} free)")
            if d.get("warning"):
                out.print(f"[yellow]warning:[/] {d['warning']}")

        emit(hp.allocate(count, size), human)

    @app.command()
    def iosched(
        device: str = typer.Argument(..., help="block device, e.g. vda or /dev/sda"),
        scheduler: str | None = typer.Argument(None, help="scheduler to select (omit to show)"),
    ) -> None:
        """Show or set a block device's IO scheduler."""
        from kvmkit.host import iosched as io

        data = io.get(device) if scheduler is None else io.set_scheduler(device, scheduler)
        emit(data, lambda d: console().print(
            f"{d['device']}: {d['scheduler']} (available: {', '.join(d['available'])})"
            + (f", was {d['previous']}" if "previous" in d else "")))

    profile = typer.Typer(help="tuning profiles: virtual-host, virtual-guest, your own", no_args_is_help=True)

    @profile.callback()
    def _profile() -> None:
        """sysctl/sysfs tuning profiles (tuned format), applied reversibly"""

    @profile.command("list")
    def profile_list() -> None:
        """Built-in and user profiles (/etc/kvmkit/profiles/*.conf)."""
        from kvmkit.host import profiles

        emit(profiles.list_profiles(), lambda rows: table(
            [{**r, "applied": "yes" if r["applied"] else ""} for r in rows], ["name", "kind", "applied", "summary"]))

    @profile.command("show")
    def profile_show(
        name: str | None = typer.Argument(None, help="profile name"),
        file: str | None = typer.Option(None, "--file", help="a profile file (tuned.conf format)"),
    ) -> None:
        """A profile's values (includes resolved) and this host's current ones."""
        from kvmkit.host import profiles

        emit(profiles.show(name, file=file), _human_profile)

    @profile.command("apply")
    def profile_apply(
        name: str | None = typer.Argument(None, help="profile name"),
        file: str | None = typer.Option(None, "--file", help="a profile file (tuned.conf format)"),
        persist: bool = typer.Option(False, "--persist", help="also write /etc/sysctl.d/90-kvmkit-NAME.conf"),
    ) -> None:
        """Apply a profile, recording the previous values for rollback (tuned-adm when tuned runs)."""
        from kvmkit.host import profiles

        def human(d: dict[str, Any]) -> None:
            out = console()
            out.print(f"applied {d['profile']} ({d['method']}): {len(d['changed'])} value(s)")
            for c in d["changed"]:
                out.print(f"  {c['path']}: {c['before']} -> {c['after']}")
            if d["skipped"]:
                out.print("[dim]not on this kernel, skipped: " + ", ".join(d["skipped"]) + "[/]")
            if d["persisted"]:
                out.print(f"persisted in {d['persisted']}")
            out.print("undo with: kvmkit host profile rollback")

        emit(profiles.apply(name, file=file, persist=persist), human)

    @profile.command("rollback")
    def profile_rollback() -> None:
        """Restore every value the applied profile changed; remove its sysctl.d file."""
        from kvmkit.host import profiles

        emit(profiles.rollback(), lambda d: console().print(
            f"rolled back {d['profile']}: " + (", ".join(f"{r['path']}={r['value']}" for r in d["restored"])
                                               or "nothing had changed")))

    app.add_typer(profile, name="profile")

    @app.command()
    def plan(
        vm: list[str] = typer.Option(..., "--vm", help="[NAME=]VCPUSc:MEMORY[:SOCKETSxCORES], e.g. mail1=4c:32G"),
        topology: str | None = typer.Option(None, "--topology", help="host topology JSON (default: this host)"),
        overcommit: float = typer.Option(1.0, "--overcommit", help="max vCPUs per physical core before warning"),
    ) -> None:
        """NUMA-aware placement advice: which node and host CPUs each VM should use, with the XML."""
        from kvmkit.host.plan import make_plan, parse_vm
        from kvmkit.host.topology import host_topology, load_topology

        requests = [parse_vm(v, i) for i, v in enumerate(vm)]
        topo = load_topology(topology) if topology else host_topology()
        emit(make_plan(topo, requests, overcommit=overcommit), _human_plan)
