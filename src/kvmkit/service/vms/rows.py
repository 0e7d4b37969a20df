"""One VM-list row from libvirt's bulk domain stats, shared by the library and the CLI's lean path.

This module imports nothing from libvirt so the lean ``vm list`` path (kvmkit.cli.lean_libvirt) can use
it; the numbers are libvirt's stable ABI values (virDomainState, virDomainStatsTypes), and a test checks
them against libvirt-python's constants.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: importing typing costs the CLI's lean paths a few ms
if TYPE_CHECKING:
    from typing import Any

# virDomainState
STATES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutting-down",
    5: "shut-off",
    6: "crashed",
    7: "pm-suspended",
}
RUNNING = 1
# virDomainStatsTypes: STATE | BALLOON | VCPU, the groups a list row needs
LIST_STATS = 1 | 4 | 8
# virConnectGetAllDomainStatsFlags: ACTIVE
STATS_ACTIVE_ONLY = 1


def state_name(code: int) -> str:
    return STATES.get(code, f"unknown({code})")


def row(name: str, uuid: str, stats: dict[str, Any], host: str) -> dict[str, Any]:
    """The row ``kvmkit vm list`` and GET /api/v1/vms show for one domain."""
    cur_kib = stats.get("balloon.current")
    max_kib = stats.get("balloon.maximum")
    return {
        "name": name,
        "uuid": uuid,
        "state": state_name(stats.get("state.state", 0)),
        "vcpus": stats.get("vcpu.current"),
        "max_vcpus": stats.get("vcpu.maximum"),
        "memory_mib": cur_kib // 1024 if cur_kib is not None else None,
        "max_memory_mib": max_kib // 1024 if max_kib is not None else None,
        "host": host,
    }
