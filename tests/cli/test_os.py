"""``kvmkit os list | show`` (cli/os.py) as a user runs them: the entries of Debian's osinfo-db and kvmkit's
overlay with where each came from, a preset's devices, the fallback for an unknown newer release, and the
error for an unknown OS."""

from __future__ import annotations

import json

import pytest

from tests.support.cli_run import kvmkit

pytestmark = pytest.mark.fast


def test_list_a_family_says_where_each_entry_came_from() -> None:
    rows = {r["short_id"]: r for r in json.loads(kvmkit("--json", "os", "list", "--family", "debian").stdout)}
    assert rows["debian12"]["source"] == "kvmkit"  # the packaged db (2022) has no debian12: the overlay's
    assert rows["debian11"]["source"] == "system"
    assert {r["distro"] for r in rows.values()} == {"debian"}
    table = kvmkit("os", "list", "--family", "debian").stdout
    assert "debian12" in table and "SOURCE" in table


def test_show_win11_has_the_overlay_preset_uefi_secure_boot_and_a_tpm() -> None:
    shown = json.loads(kvmkit("--json", "os", "show", "win11").stdout)
    assert (shown["source"], shown["replaces"], shown["fallback"]) == ("kvmkit", "system", False)
    p = shown["preset"]
    assert (p["uefi_required"], p["secure_boot"], p["tpm"], p["disk_bus"], p["nic_model"]) == \
        (True, True, True, "sata", "e1000e")


def test_an_unknown_newer_release_falls_back_with_a_warning_naming_it() -> None:
    res = kvmkit("--json", "os", "show", "fedora41")
    shown = json.loads(res.stdout)
    assert shown["requested"] == "fedora41" and shown["fallback"] is True
    assert shown["short_id"].startswith("fedora") and shown["short_id"] in shown["message"]


def test_an_unknown_os_is_an_error_with_a_hint() -> None:
    res = kvmkit("os", "show", "nope", check=False)
    assert res.returncode == 1 and res.stdout == ""
    assert "error: unknown OS 'nope'" in res.stderr and "hint: see `kvmkit os list`" in res.stderr


def test_an_unknown_family_is_an_error_naming_the_known_ones() -> None:
    res = kvmkit("os", "list", "--family", "debain", check=False)
    assert res.returncode == 1 and res.stdout == ""
    assert "error: unknown OS family or distro 'debain' (did you mean debian?)" in res.stderr
    assert "hint: one of: " in res.stderr and "winnt" in res.stderr
