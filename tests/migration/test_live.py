"""Live migration on the test bed: a running micro-guest moves A->B and back, with shared storage and with
storage copy; its status line goes on without a reboot (uptime keeps counting, one ready marker) and its
serial log, at the same path on both hosts, only grows (the destination appends: kvmkit sets append='on'
for the destination, the guest was defined with append='off')."""

from __future__ import annotations

import json
import re

import pytest

from kvmkit.service.migration.migrate import migrate_vm
from kvmkit.service.migration.model import MigrationRefused
from kvmkit.spec.migration import MigrateSpec
from tests.migration.conftest import defined_on, dir_pool, ends, guest, own_files, qcow2
from tests.support.cli_run import KVMKIT

pytestmark = pytest.mark.guest


def _continues(g, before_text: str, last_uptime: float) -> None:
    """The guest went on: the log holds what it held (append-only), a later status counts on, one boot."""
    status = g.log.wait_status(timeout=60, after=len(before_text))
    text = g.log.text()
    assert text.startswith(before_text), "the serial log lost history across the migration"
    assert status.uptime > last_uptime
    assert text.count("KVMKIT-GUEST-READY") == 1, "the guest booted again"
    uptimes = [s.uptime for s in g.log.statuses()]
    assert uptimes == sorted(uptimes), f"uptime went back: {uptimes}"


def _cli(inventory, *args: str) -> dict:
    import os
    import subprocess

    env = {**os.environ, "KVMKIT_DB": inventory.db_url, "KVMKIT_NO_WARM": "1"}
    res = subprocess.run([KVMKIT, "--json", *args], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, f"kvmkit {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def test_live_with_shared_storage_there_and_back(hosts, inventory, workdir) -> None:
    disk = workdir / f"{hosts.prefix}vda.qcow2"  # the workdir is the same directory on every bed host
    pool = dir_pool(hosts, "a", str(workdir))
    path = qcow2(pool, disk.name)
    g = guest(hosts, "a", disks=[{"path": path, "format": "qcow2"}])
    before, last = g.log.text(), g.log.statuses()[-1].uptime

    src, dst = ends(inventory, "a", "b")
    res = migrate_vm(src, dst, g.name, MigrateSpec(to="b"))
    assert res["mode"] == "live" and res["transport"] == "peer-to-peer"
    assert {"LIVE", "PEER2PEER", "PERSIST_DEST", "UNDEFINE_SOURCE"} <= set(res["flags"])
    # a local filesystem at the same path: libvirt calls it unsafe, kvmkit proved it is the same file
    assert res["unsafe"] and "UNSAFE" in res["flags"] and "same size and change time" in res["unsafe_reason"]
    assert res["downtime_ms"] is not None and res["downtime_ms"] >= 0 and res["job_ms"] > 0
    assert res["data_transferred"] > 0
    assert defined_on(hosts, g.name) == {"b": (True, True)}
    _continues(g, before, last)

    before, last = g.log.text(), g.log.statuses()[-1].uptime
    back = _cli(inventory, "--host", "b", "vm", "migrate", g.name, "--to", "a")  # and back, with the CLI
    assert back["from"] == "b" and back["to"] == "a" and back["state"] == "running"
    assert defined_on(hosts, g.name) == {"a": (True, True)}
    _continues(g, before, last)


def test_live_with_storage_copy_there_and_back(hosts, inventory, local_dirs) -> None:
    path_dir = local_dirs("disks")
    pool_a = dir_pool(hosts, "a", path_dir)
    dir_pool(hosts, "b", path_dir)  # the destination's pool at the same path: copy-storage creates the disk there
    path = qcow2(pool_a, f"{hosts.prefix}vda.qcow2")
    g = guest(hosts, "a", disks=[{"path": path, "format": "qcow2"}])
    src, dst = ends(inventory, "a", "b")

    with pytest.raises(MigrationRefused) as refused:  # not shared: host b has no such file
        migrate_vm(src, dst, g.name, MigrateSpec(to="b"))
    storage = next(c for c in refused.value.plan.checks if c.name == "storage")
    assert storage.status == "fail" and "not shared" in storage.detail and "--copy-storage" in (storage.fix or "")
    assert defined_on(hosts, g.name) == {"a": (True, True)}

    before, last = g.log.text(), g.log.statuses()[-1].uptime
    res = migrate_vm(src, dst, g.name, MigrateSpec(to="b", copy_storage=True))
    assert "NON_SHARED_DISK" in res["flags"] and not res["unsafe"]
    assert res["source_volumes_removed"] == [path]
    assert own_files(hosts, "b", "disks") == [f"{hosts.prefix}vda.qcow2"] and own_files(hosts, "a", "disks") == []
    assert defined_on(hosts, g.name) == {"b": (True, True)}
    _continues(g, before, last)

    before, last = g.log.text(), g.log.statuses()[-1].uptime
    src, dst = ends(inventory, "b", "a")
    back = migrate_vm(src, dst, g.name, MigrateSpec(to="a", copy_storage=True, bandwidth_mib=500))
    assert back["bandwidth_mib"] == 500
    assert own_files(hosts, "a", "disks") == [f"{hosts.prefix}vda.qcow2"] and own_files(hosts, "b", "disks") == []
    assert defined_on(hosts, g.name) == {"a": (True, True)}
    _continues(g, before, last)


def test_progress_reports_data_rate_and_expected_downtime(hosts, inventory) -> None:
    g = guest(hosts, "a")
    seen: list[dict] = []
    src, dst = ends(inventory, "a", "b")
    res = migrate_vm(src, dst, g.name, MigrateSpec(to="b", bandwidth_mib=20), progress=seen.append)
    copying = [p for p in seen if p.get("phase") == "copying"]
    assert copying, f"no progress while copying: {seen}"
    assert all(p["data_total"] > 0 and 0 <= p["data_remaining"] <= p["data_total"] for p in copying)
    assert any(p["memory_bps"] > 0 for p in copying)
    assert any(p["expected_downtime_ms"] is not None for p in copying)
    assert all(re.search(r"MiB left", p["message"]) for p in copying)
    assert res["downtime_ms"] is not None and res["iterations"] >= 1


def test_managed_when_the_destination_uri_is_local_only(hosts, inventory) -> None:
    """A destination known by a local URI only (qemu:///system: the source's libvirtd cannot open it): kvmkit
    drives libvirt's phases itself with both connections (virDomainMigrate3)."""
    from kvmkit.service.migration.model import Endpoint

    g = guest(hosts, "a")
    before, last = g.log.text(), g.log.statuses()[-1].uptime
    src, dst = ends(inventory, "a", "b")
    local_only = Endpoint(dst.name, "qemu:///system", dst.conn)
    res = migrate_vm(src, local_only, g.name, MigrateSpec(to="b", auto_converge=True, postcopy=True))
    assert res["transport"] == "managed" and "PEER2PEER" not in res["flags"]
    assert {"AUTO_CONVERGE", "POSTCOPY"} <= set(res["flags"])
    # post-copy is switched to after the first pass over memory; the micro-guest dirties so little memory that
    # its second pass is over before kvmkit's next look: then the pre-copy simply converged
    assert isinstance(res["postcopy"], bool)
    assert defined_on(hosts, g.name) == {"b": (True, True)}
    _continues(g, before, last)
