"""``kvmkit vm clone|backup|restore`` through the real CLI binary against qemu:///system."""

from __future__ import annotations

import json

import pytest

from tests.cli.test_snapshot_cli import kvmkit, make_disk


@pytest.mark.guest
def test_clone_backup_restore_commands(conn, micro_guest, workdir, prefix):
    src = micro_guest("csrc", start=False, disks=[{"path": make_disk(workdir, f"{prefix}csrc", "qcow2"),
                                                   "format": "qcow2"}])
    res = kvmkit("--json", "vm", "clone", src.name, f"{prefix}c1", "--linked")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["linked"] and out["disks"][0]["path"] == str(workdir / f"{prefix}c1-vda.qcow2")
    human = kvmkit("vm", "clone", src.name, f"{prefix}c2")
    assert human.returncode == 0 and "full" in human.stdout, human.stderr
    again = kvmkit("vm", "clone", src.name, f"{prefix}c2")
    assert again.returncode == 1 and "exists already" in again.stderr
    dest = workdir / "bk"
    bk = kvmkit("--json", "vm", "backup", f"{prefix}c2", "--to", str(dest))
    assert bk.returncode == 0, bk.stderr
    assert json.loads(bk.stdout)["disks"][0]["file"] == "vda.qcow2"
    rs = kvmkit("--json", "vm", "restore", str(dest), "--name", f"{prefix}r1")
    assert rs.returncode == 0, rs.stderr
    assert json.loads(rs.stdout)["disks"][0]["path"].endswith(f"/{prefix}r1-vda.qcow2")
    (dest / "domain.xml").write_text((dest / "domain.xml").read_text().replace("<vcpu", "<vcpu "))
    bad = kvmkit("vm", "restore", str(dest), "--name", f"{prefix}r2")
    assert bad.returncode == 1 and "domain.xml is corrupt" in bad.stderr
    assert f"{prefix}r2" not in [d.name() for d in conn.listAllDomains()]
    missing = kvmkit("vm", "restore", str(workdir), "--name", f"{prefix}r3")
    assert missing.returncode == 1 and "not a kvmkit backup" in missing.stderr
