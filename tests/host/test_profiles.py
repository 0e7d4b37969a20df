"""Tuning profiles applied for real on this host, then rolled back to exactly the values before."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvmkit.errors import Conflict, InvalidInput, NotFound
from kvmkit.host import profiles, sysfs
from tests.host.conftest import snapshot

KVMKIT = [sys.executable, "-m", "kvmkit"]


def _values(prof: dict) -> dict[str, str]:
    return {s["key"]: s["value"] for s in prof["settings"]}


@pytest.mark.fast
def test_builtins_carry_tuneds_values():
    names = {p["name"] for p in profiles.list_profiles()}
    assert {"virtual-host", "virtual-guest"} <= names
    guest = _values(profiles.load("virtual-guest"))
    assert guest["vm.dirty_ratio"] == "30" and guest["vm.swappiness"] == "30"
    assert guest["vm.dirty_background_ratio"] == "10"  # inherited from throughput-performance
    host = _values(profiles.load("virtual-host"))
    assert host["vm.dirty_background_ratio"] == "5" and host["kernel.sched_migration_cost_ns"] == "5000000"
    assert host["vm.dirty_ratio"] == "40" and host["/sys/kernel/mm/transparent_hugepage/enabled"] == "always"


@pytest.mark.fast
@pytest.mark.parametrize("name", ["virtual-host", "virtual-guest"])
def test_apply_then_rollback_restores_every_value(name, tunables_saved):
    before = snapshot()
    result = profiles.apply(name)
    assert result["method"] == "direct" and result["changed"]
    shown = profiles.show(name)
    for s in shown["settings"]:
        if s["current"] is not None:
            assert s["current"] == s["value"], s  # the profile really is in effect
    assert profiles.applied()["profile"] == name
    assert any(p["applied"] for p in profiles.list_profiles() if p["name"] == name)
    back = profiles.rollback()
    assert back["profile"] == name and profiles.applied() is None
    assert snapshot() == before


@pytest.mark.fast
def test_user_profile_from_file_with_persist(tunables_saved, workdir, prefix):
    """The seeds' kvm-os: virtual-guest with vm.dirty_ratio=20, persisted in sysctl.d while applied."""
    conf = workdir / f"{prefix}kvm-os.conf"
    conf.write_text("[main]\nsummary=seeds' kvm-os\ninclude=virtual-guest\n\n[sysctl]\nvm.dirty_ratio = 20\n"
                    "\n[cpu]\ngovernor=performance\n")
    name = f"{prefix}kvm-os"
    shown = profiles.show(file=conf)
    assert shown["name"] == name and _values(shown)["vm.dirty_ratio"] == "20"
    assert _values(shown)["vm.swappiness"] == "30" and "[cpu] (not managed by kvmkit)" in shown["ignored"]
    before = snapshot()
    result = profiles.apply(file=conf, persist=True)
    persisted = Path(result["persisted"])
    try:
        assert persisted == Path(f"/etc/sysctl.d/90-kvmkit-{name}.conf")
        assert "vm.dirty_ratio = 20" in persisted.read_text().splitlines()
        assert sysfs.read(sysfs.sysctl_path("vm.dirty_ratio")) == "20"
        with pytest.raises(Conflict, match=name):
            profiles.apply("virtual-host")
    finally:
        back = profiles.rollback()
    assert back["unpersisted"] == str(persisted) and not persisted.exists()
    assert snapshot() == before


@pytest.mark.fast
def test_bad_profiles_are_refused(workdir, tunables_saved):
    with pytest.raises(NotFound, match="no-such-profile"):
        profiles.load("no-such-profile")
    with pytest.raises(NotFound, match="no kvmkit tuning profile is applied"):
        profiles.rollback()
    bad = workdir / "bad.conf"
    bad.write_text("[sysctl]\n../../etc/x = 1\n")
    with pytest.raises(InvalidInput, match="sysctl name"):
        profiles.load(file=bad)
    bad.write_text("[sysfs]\n/etc/passwd = 1\n")
    with pytest.raises(InvalidInput, match="not a /sys path"):
        profiles.load(file=bad)
    bad.write_text("[sysctl]\nvm.swappiness = 31\nvm.dirty_ratio = not-a-number\n")  # first one is fine
    before = snapshot()
    with pytest.raises(InvalidInput, match="dirty_ratio"):
        profiles.apply(file=bad)
    assert profiles.applied() is None and snapshot() == before  # nothing half-applied


@pytest.mark.fast
def test_cli_profile_apply_and_rollback(tunables_saved):
    before = snapshot()
    res = subprocess.run([*KVMKIT, "host", "profile", "apply", "virtual-guest", "--json"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert {c["path"] for c in json.loads(res.stdout)["changed"]} >= {"/proc/sys/vm/swappiness"}
    assert sysfs.read(sysfs.sysctl_path("vm.swappiness")) == "30"
    res = subprocess.run([*KVMKIT, "host", "profile", "rollback"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "rolled back virtual-guest" in res.stdout
    assert snapshot() == before
    shown = subprocess.run([*KVMKIT, "host", "profile", "show", "virtual-host"], capture_output=True, text=True,
                           timeout=60)
    assert "vm.dirty_background_ratio" in shown.stdout
