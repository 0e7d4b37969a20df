"""``vm delete --storage`` after a disk-only snapshot removes the whole backing chain the VM alone uses
(the base below the overlay too), and keeps a base that another VM or a template still needs."""

from __future__ import annotations

import os

import pytest

from kvmkit.service.copies import snapshots
from kvmkit.service.vms import lifecycle as lc
from tests.service.vms.test_vm_lifecycle import _dir_pool, _volume

pytestmark = pytest.mark.guest


def test_delete_storage_takes_the_base_of_a_disk_only_snapshot(conn, micro_guest, workdir, prefix) -> None:
    pool = _dir_pool(conn, prefix, workdir)
    base = _volume(pool, f"{prefix}root.qcow2")
    vm = micro_guest("a", start=False, disks=[{"path": base, "format": "qcow2"}])
    snapshots.create_snapshot(conn, vm.name, "s1", disk_only=True)
    top = [p for p in os.listdir(workdir / "pool") if p != f"{prefix}root.qcow2"]
    assert top, "the snapshot made no overlay"
    result = lc.delete(conn, vm.name, storage=True)
    assert base in result["deleted"], result
    assert not os.path.exists(base) and os.listdir(workdir / "pool") == []


def test_delete_storage_keeps_a_base_another_vm_builds_on(conn, micro_guest, workdir, prefix) -> None:
    pool = _dir_pool(conn, prefix, workdir)
    base = _volume(pool, f"{prefix}golden.qcow2")
    mine = _volume(pool, f"{prefix}mine.qcow2", backing=base)
    theirs = _volume(pool, f"{prefix}theirs.qcow2", backing=base)
    a = micro_guest("a", start=False, disks=[{"path": mine, "format": "qcow2"}])
    micro_guest("b", start=False, disks=[{"path": theirs, "format": "qcow2"}])
    result = lc.delete(conn, a.name, storage=True)
    assert result["deleted"] == [mine]
    assert {k["path"] for k in result["kept"]} == {base}
    assert os.path.exists(base) and os.path.exists(theirs) and not os.path.exists(mine)
