"""Snapshots through the API: create, list, revert and delete run as tasks on a micro-guest with a qcow2 disk."""

from __future__ import annotations

import httpx
import pytest

from kvmkit.images import qemu_img
from tests.api.conftest import wait_task

pytestmark = pytest.mark.guest


def test_snapshot_create_list_revert_delete(micro_guest, workdir, admin: httpx.Client) -> None:
    disk = workdir / "disk.qcow2"
    qemu_img.create(disk, "qcow2", 64 * 1024**2)
    disk.chmod(0o666)
    vm = micro_guest("snap", start=False, disks=[{"path": str(disk), "format": "qcow2"}]).name
    r = admin.post(f"/api/v1/vms/{vm}/snapshots", json={"name": "s1", "description": "first"})
    assert r.status_code == 202, r.text
    task = wait_task(admin, r.json()["id"])
    assert task["state"] == "succeeded", task["error"]
    snaps = admin.get(f"/api/v1/vms/{vm}/snapshots").json()
    assert [s["name"] for s in snaps] == ["s1"]
    r = admin.post(f"/api/v1/vms/{vm}/snapshots/s1/revert")
    assert wait_task(admin, r.json()["id"])["state"] == "succeeded"
    r = admin.post(f"/api/v1/vms/{vm}/snapshots/nope/revert")
    task = wait_task(admin, r.json()["id"])
    assert task["state"] == "failed" and "nope" in task["error"]
    r = admin.delete(f"/api/v1/vms/{vm}/snapshots/s1")
    assert wait_task(admin, r.json()["id"])["state"] == "succeeded"
    assert admin.get(f"/api/v1/vms/{vm}/snapshots").json() == []
