"""Lean paths for the hottest read-only commands, run without importing Typer, Rich or pydantic.

``kvmkit vm list [--all] [--ip|--no-ip]`` is what scripts and monitoring call in a loop; Typer and its
dependencies alone cost ~100 ms at start-up. Anything this module does not recognise exactly (other flags,
--help) goes the normal way through Typer, so the behaviour and output are the same either way.
``KVMKIT_NO_FASTPATH=1`` turns it off.
"""

from __future__ import annotations

import sys


def try_run(args: list[str]) -> bool:
    """Run ``args`` if it is a command this module serves; return False to let Typer handle it."""
    import os

    if args[:2] != ["vm", "list"] or os.environ.get("KVMKIT_NO_FASTPATH"):
        return False
    flags = set(args[2:])
    if not flags <= {"--all", "--ip", "--no-ip"} or {"--ip", "--no-ip"} <= flags:
        return False
    from kvmkit.cli.context import settings

    if not settings.json:
        return False  # the table view needs Rich: the normal path
    import json

    from kvmkit.hypervisor.connection import connect
    from kvmkit.service.vm_query import list_vms

    rows = list_vms(connect(settings.connect), include_inactive="--all" in flags, ips="--no-ip" not in flags)
    sys.stdout.write(json.dumps(rows) + "\n")
    return True
