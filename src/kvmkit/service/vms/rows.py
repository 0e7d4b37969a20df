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
# why a domain is in its state (virDomainRunningReason, virDomainPausedReason, ...: dom.state()[1] and the
# bulk stats' state.reason), keyed by state; a test checks them against libvirt-python's constants
REASONS = {
    0: {0: "unknown"},
    1: {0: "unknown", 1: "booted", 2: "migrated", 3: "restored", 4: "from-snapshot", 5: "unpaused",
        6: "migration-canceled", 7: "save-canceled", 8: "wakeup", 9: "crashed", 10: "postcopy",
        11: "postcopy-failed"},
    2: {0: "unknown"},
    3: {0: "unknown", 1: "user", 2: "migration", 3: "save", 4: "dump", 5: "io-error", 6: "watchdog",
        7: "from-snapshot", 8: "shutting-down", 9: "snapshot", 10: "crashed", 11: "starting-up", 12: "postcopy",
        13: "postcopy-failed", 14: "api-error"},
    4: {0: "unknown", 1: "user"},
    5: {0: "unknown", 1: "shutdown", 2: "destroyed", 3: "crashed", 4: "migrated", 5: "saved", 6: "failed",
        7: "from-snapshot", 8: "daemon"},
    6: {0: "unknown", 1: "panicked"},
    7: {0: "unknown"},
}
# reasons worth showing next to the state in human output: something went wrong
NOTABLE = frozenset({"crashed", "io-error", "watchdog", "failed", "panicked", "postcopy-failed", "api-error",
                     "daemon"})
# virDomainStatsTypes: STATE | BALLOON | VCPU, the groups a list row needs
LIST_STATS = 1 | 4 | 8
# virConnectGetAllDomainStatsFlags: ACTIVE
STATS_ACTIVE_ONLY = 1


def state_name(code: int) -> str:
    return STATES.get(code, f"unknown({code})")


def reason_name(state: int, reason: int) -> str:
    """libvirt's reason code for ``state`` as a word (``shut-off`` + 3 -> ``crashed``)."""
    return REASONS.get(state, {}).get(reason, f"unknown({reason})")


def shown_state(state: str, reason: str | None) -> str:
    """The state for people: ``shut-off (crashed)``, ``paused (io-error)``; plain when nothing went wrong."""
    return f"{state} ({reason})" if reason in NOTABLE else state


def row(name: str, uuid: str, stats: dict[str, Any], host: str) -> dict[str, Any]:
    """The row ``kvmkit vm list`` and GET /api/v1/vms show for one domain."""
    cur_kib = stats.get("balloon.current")
    max_kib = stats.get("balloon.maximum")
    return {
        "name": name,
        "uuid": uuid,
        "state": state_name(stats.get("state.state", 0)),
        "state_reason": reason_name(stats.get("state.state", 0), stats.get("state.reason", 0)),
        "vcpus": stats.get("vcpu.current"),
        "max_vcpus": stats.get("vcpu.maximum"),
        "memory_mib": cur_kib // 1024 if cur_kib is not None else None,
        "max_memory_mib": max_kib // 1024 if max_kib is not None else None,
        "host": host,
    }
