"""``kvmkit snapshot ...`` end to end through the real CLI binary against qemu:///system."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

KVMKIT = str(Path(sys.executable).parent / "kvmkit")


def kvmkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KVMKIT, "--connect", "qemu:///system", *args], capture_output=True, text=True,
                          timeout=120)


def make_disk(workdir: Path, name: str, fmt: str) -> str:
    path = workdir / f"{name}.{fmt}"
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(path), "32M"], check=True)
    return str(path)


@pytest.mark.guest
def test_snapshot_commands_json_and_human(micro_guest, workdir, prefix):
    guest = micro_guest("cli", start=False, disks=[{"path": make_disk(workdir, f"{prefix}cli", "qcow2"),
                                                    "format": "qcow2"}])
    res = kvmkit("--json", "snapshot", "create", guest.name, "s1", "--description", "before upgrade")
    assert res.returncode == 0, res.stderr
    made = json.loads(res.stdout)
    assert made["name"] == "s1" and made["kind"] == "internal" and made["description"] == "before upgrade"
    assert kvmkit("snapshot", "create", guest.name, "s2").returncode == 0
    dup = kvmkit("snapshot", "create", guest.name, "s2")
    assert dup.returncode == 1 and "already has a snapshot 's2'" in dup.stderr
    tree = json.loads(kvmkit("snapshot", "list", guest.name, "--json").stdout)
    assert [(t["name"], t["depth"], t["current"]) for t in tree] == [("s1", 0, False), ("s2", 1, True)]
    human = kvmkit("snapshot", "list", guest.name)
    assert human.returncode == 0 and "s1" in human.stdout and "current" in human.stdout
    assert json.loads(kvmkit("--json", "snapshot", "current", guest.name).stdout)["name"] == "s2"
    rev = kvmkit("--json", "snapshot", "revert", guest.name, "s1")
    assert rev.returncode == 0 and json.loads(rev.stdout)["state"] == "shut off"
    assert json.loads(kvmkit("--json", "snapshot", "current", guest.name).stdout)["name"] == "s1"
    assert kvmkit("snapshot", "delete", guest.name, "s1").returncode == 0
    assert kvmkit("--json", "snapshot", "delete", guest.name, "s2").returncode == 0
    assert json.loads(kvmkit("--json", "snapshot", "list", guest.name).stdout) == []
    assert json.loads(kvmkit("--json", "snapshot", "current", guest.name).stdout) is None
    missing = kvmkit("snapshot", "revert", guest.name, "nope")
    assert missing.returncode != 0 and "no snapshot 'nope'" in missing.stderr and "hint:" in missing.stderr


@pytest.mark.guest
def test_snapshot_of_raw_disk_vm_is_refused(micro_guest, workdir, prefix):
    raw = make_disk(workdir, f"{prefix}raw", "raw")
    guest = micro_guest("cliraw", start=False, disks=[{"path": raw, "format": "raw"}])
    res = kvmkit("--json", "snapshot", "create", guest.name)
    assert res.returncode == 1
    err = json.loads(res.stdout)
    assert raw in err["error"] and "vda" in err["error"] and "kvmkit image convert" in err["hint"]
    assert err["code"] == "invalid_state"


@pytest.mark.guest
def test_snapshot_of_unknown_vm(prefix):
    res = kvmkit("snapshot", "list", f"{prefix}none")
    assert res.returncode == 1 and "not found" in res.stderr
