"""Lean paths for the hottest read-only commands, run without importing Typer, Rich, pydantic or libvirt.py.

``kvmkit vm list --json [--all] [--ip|--no-ip]`` is what scripts and monitoring call in a loop, and
what operators compare with ``virsh list --all``. It runs before anything else is imported: the
arguments are parsed here (only that exact shape), libvirt is called through ``libvirtmod``
(kvmkit.cli.lean_libvirt) and the rows are built by the same function the library uses
(kvmkit.service.vms.rows.row). Anything else -- other flags, --help, the table view, any libvirt
error, ``--host``, an inventory with other hosts than the local one (``vm list`` then spans them all) --
goes the normal way through Typer, which prints the same output or the proper error.
``KVMKIT_NO_FASTPATH=1`` turns it off.
"""

from __future__ import annotations

import os
import sys

_LIST_FLAGS = {"--all", "--ip", "--no-ip"}


def parse(argv: list[str]) -> tuple[str, set[str]] | None:
    """(URI, list flags) when ``argv`` is exactly a ``vm list --json`` this path serves, else None."""
    uri = None
    json_out = False
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--json":
            json_out = True
        elif arg == "--connect" and i + 1 < len(argv):
            uri = argv[i + 1]
            i += 1
        elif arg.startswith("--connect="):
            uri = arg.split("=", 1)[1]
        elif arg.split("=", 1)[0] in ("--host", "--db"):
            return None
        else:
            rest.append(arg)
        i += 1
    if not json_out or rest[:2] != ["vm", "list"]:
        return None
    flags = set(rest[2:])
    if len(flags) != len(rest) - 2 or not flags <= _LIST_FLAGS or {"--ip", "--no-ip"} <= flags:
        return None
    if uri is None:  # without --connect, vm list spans the inventory's hosts
        from kvmkit.hosts.lean import has_other_hosts

        if has_other_hosts() is not False:
            return None
    from kvmkit.config import default_uri

    return uri or default_uri(), flags


def try_run(argv: list[str]) -> bool:
    """Serve ``argv`` (the raw command line, global options included) if it is a lean command."""
    if os.environ.get("KVMKIT_NO_FASTPATH"):
        return False
    parsed = parse(argv)
    if parsed is None:
        return False
    uri, flags = parsed
    try:
        rows = _list(uri, include_inactive="--all" in flags, ips="--no-ip" not in flags)
    except Exception:  # any failure: the normal path runs and reports it properly
        return False
    import json

    sys.stdout.write(json.dumps(rows) + "\n")
    return True


def _list(uri: str, *, include_inactive: bool, ips: bool) -> list[dict]:
    from kvmkit.cli import lean_libvirt as lv
    from kvmkit.service.vms.rows import LIST_STATS, RUNNING, STATS_ACTIVE_ONLY, row

    conn = lv.open_connection(uri)
    records = lv.all_domain_stats(conn, LIST_STATS, 0 if include_inactive else STATS_ACTIVE_ONLY)
    rows = [row(name, uuid, stats, "local") for name, uuid, _dom, stats in records]
    running = [(dom, r) for (_n, _u, dom, stats), r in zip(records, rows, strict=True)
               if stats.get("state.state") == RUNNING]
    if ips and running:
        leases = lv.lease_map(conn)
        for dom, r in running:
            try:
                r["ip"] = next((leases[m] for m in lv.macs_of(dom) if m in leases), None)
            except lv.LeanError:
                r["ip"] = None
    rows.sort(key=lambda r: r["name"])
    return rows
