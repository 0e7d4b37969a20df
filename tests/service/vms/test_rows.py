"""The state reasons of a VM-list row are libvirt's own numbers (rows.py imports no libvirt)."""

from __future__ import annotations

import libvirt
import pytest

from kvmkit.service.vms import rows

ENUMS = {  # state -> the prefix of its reason constants in libvirt-python
    libvirt.VIR_DOMAIN_NOSTATE: "VIR_DOMAIN_NOSTATE_", libvirt.VIR_DOMAIN_RUNNING: "VIR_DOMAIN_RUNNING_",
    libvirt.VIR_DOMAIN_BLOCKED: "VIR_DOMAIN_BLOCKED_", libvirt.VIR_DOMAIN_PAUSED: "VIR_DOMAIN_PAUSED_",
    libvirt.VIR_DOMAIN_SHUTDOWN: "VIR_DOMAIN_SHUTDOWN_", libvirt.VIR_DOMAIN_SHUTOFF: "VIR_DOMAIN_SHUTOFF_",
    libvirt.VIR_DOMAIN_CRASHED: "VIR_DOMAIN_CRASHED_", libvirt.VIR_DOMAIN_PMSUSPENDED: "VIR_DOMAIN_PMSUSPENDED_",
}


@pytest.mark.fast
def test_reason_numbers_are_libvirts() -> None:
    for state, prefix in ENUMS.items():
        for code, word in rows.REASONS[state].items():
            const = prefix + ("IOERROR" if word == "io-error" else word.upper().replace("-", "_"))
            assert getattr(libvirt, const, code) == code, (const, code)  # api-error: newer libvirt only
    for state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_SHUTOFF):
        known = {getattr(libvirt, k) for k in dir(libvirt) if k.startswith(ENUMS[state]) and not k.endswith("_LAST")}
        assert known <= set(rows.REASONS[state]), (state, sorted(known - set(rows.REASONS[state])))
    assert rows.reason_name(libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_CRASHED) == "crashed"
    assert rows.reason_name(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR) == "io-error"
    assert rows.reason_name(libvirt.VIR_DOMAIN_SHUTOFF, 99) == "unknown(99)"


@pytest.mark.fast
def test_shown_state_names_only_what_went_wrong() -> None:
    assert rows.shown_state("shut-off", "crashed") == "shut-off (crashed)"
    assert rows.shown_state("paused", "io-error") == "paused (io-error)"
    assert rows.shown_state("running", "booted") == "running"
    assert rows.shown_state("paused", "user") == "paused"
    assert rows.shown_state("shut-off", None) == "shut-off"


@pytest.mark.fast
def test_list_rows_carry_the_reason(test_conn) -> None:
    from kvmkit.service.vms.query import list_vms, show_vm

    dom = test_conn.lookupByName("test")
    dom.destroy()
    row = next(r for r in list_vms(test_conn) if r["name"] == "test")
    assert (row["state"], row["state_reason"]) == ("shut-off", "destroyed")
    shown = show_vm(test_conn, "test")
    assert (shown["state"], shown["state_reason"]) == ("shut-off", "destroyed")
