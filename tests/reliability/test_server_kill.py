"""The server SIGKILLed at every step of a task, then started again: no orphan domain, volume, snapshot or
file, the task failed with the step it stopped at, nothing that existed before lost (tests/reliability/
harness.py). One KillCase per task kind: in CASES with its journal written out (one test per step), or in
LEARNED with only a setup and a submit (its journal is learned from one uninterrupted run, then it is killed
at each step in turn, in one test).

A new task kind is one LEARNED case, e.g.
    KillCase(id="vm.clone", kind="vm.clone", steps=(), setup=_clone_setup, expect=_made_vm("new"),
             submit=lambda c, w: c.post(f"/api/v1/vms/{w.vars['vm']}/clone", json={"name": w.vars["new"]})),
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import libvirt
import pytest

from kvmkit.images import qemu_img
from kvmkit.service.copies import snapshots
from tests.reliability.harness import CrashServer, KillCase, World, kill_at_every_step, kill_at_step, point_id

pytestmark = pytest.mark.guest


# --- VM create ----------------------------------------------------------------------------------------

def _create_setup(w: World) -> None:
    w.vars["vm"] = f"{w.prefix}new"


def _create_submit(c: httpx.Client, w: World) -> httpx.Response:
    return c.post("/api/v1/vms", json={
        "name": w.vars["vm"], "micro": True, "memory_mib": 128, "start": True,
        "disks": [{"size": "64M", "pool": "default"}], "serial_log": str(w.workdir / f"{w.vars['vm']}.log")})


def _create_check(w: World, k: int, task: dict[str, Any]) -> None:
    assert w.vars["vm"] not in {d.name() for d in w.conn.listAllDomains()}
    if k >= 4:  # the volume had been made: recovery says it deleted it
        assert "deleted orphan volume default/" in task["error"], task["error"]
    if k >= 5:
        assert f"undefined half-created VM {w.vars['vm']}" in task["error"], task["error"]


CREATE = KillCase(
    id="vm.create", kind="vm.create",
    steps=("create", "micro-guest", "create-volume", "define", "defined", "start"),
    setup=_create_setup, submit=_create_submit, check=_create_check)


# --- snapshots ----------------------------------------------------------------------------------------

def _vm_with_disk(w: World, *, start: bool) -> str:
    disk = w.workdir / "disk.qcow2"
    qemu_img.create(disk, "qcow2", 64 * 1024**2)
    disk.chmod(0o666)
    guest = w.micro_guest("snap", start=start, disks=[{"path": str(disk), "format": "qcow2"}])
    w.vars.update(vm=guest.name, disk=str(disk), guest=guest)
    return str(guest.name)


def _shut_off_vm(w: World) -> None:
    _vm_with_disk(w, start=False)


def _running_vm(w: World) -> None:
    _vm_with_disk(w, start=True)


def _snap_item(w: World, name: str) -> tuple[str, str]:
    return ("snapshot", f"{w.vars['vm']}/{name}")


def _overlay(w: World, name: str) -> str:
    return str(w.workdir / f"{w.vars['vm']}-vda.{name}.qcow2")


def _starts(w: World) -> None:
    """The VM still boots from its disks (nothing it needs was removed or left half-merged)."""
    dom = w.conn.lookupByName(w.vars["vm"])
    if not dom.isActive():
        dom.create()
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    dom.destroy()


def _create_snap_submit(disk_only: bool) -> Any:
    def submit(c: httpx.Client, w: World) -> httpx.Response:
        return c.post(f"/api/v1/vms/{w.vars['vm']}/snapshots", json={"name": "s1", "disk_only": disk_only})
    return submit


def _snap_made_at(made_from: int, *, external: bool) -> Any:
    def expect(w: World, k: int) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        new: set[tuple[str, str]] = set()
        if k >= made_from:  # libvirt had made it: a whole snapshot is kept
            new.add(_snap_item(w, "s1"))
            if external:
                new.add(("file", _overlay(w, "s1")))
        return set(), new
    return expect


def _snap_create_check(made_from: int) -> Any:
    def check(w: World, k: int, task: dict[str, Any]) -> None:
        if k >= made_from:
            assert "had been made before the server stopped: kept" in task["error"], task["error"]
        dom = w.conn.lookupByName(w.vars["vm"])
        assert not dom.isActive() or not dom.blockJobInfo("vda", 0)
        if dom.isActive():
            dom.destroy()
        _starts(w)
    return check


SNAP_CREATE = KillCase(
    id="snapshot.create-internal", kind="vm.snapshot.create", steps=("snapshot", "files", "made"),
    setup=_shut_off_vm, submit=_create_snap_submit(False),
    expect=_snap_made_at(3, external=False), check=_snap_create_check(3))

SNAP_CREATE_EXT = KillCase(
    id="snapshot.create-disk-only-running", kind="vm.snapshot.create",
    steps=("snapshot", "files", "refresh", "made"),
    setup=_running_vm, submit=_create_snap_submit(True),
    expect=_snap_made_at(3, external=True), check=_snap_create_check(3))


def _revert_setup(w: World) -> None:
    vm = _vm_with_disk(w, start=False)
    snapshots.create_snapshot(w.conn, vm, "s1")


def _revert_check(w: World, k: int, task: dict[str, Any]) -> None:
    assert f"VM {w.vars['vm']} is shut off" in task["error"], task["error"]
    _starts(w)


SNAP_REVERT = KillCase(
    id="snapshot.revert", kind="vm.snapshot.revert", steps=("revert", "reverted"),
    setup=_revert_setup, submit=lambda c, w: c.post(f"/api/v1/vms/{w.vars['vm']}/snapshots/s1/revert"),
    check=_revert_check)

SNAP_DELETE = KillCase(
    id="snapshot.delete-internal", kind="vm.snapshot.delete", steps=("delete-snapshot",),
    setup=_revert_setup, submit=lambda c, w: c.delete(f"/api/v1/vms/{w.vars['vm']}/snapshots/s1"),
    check=lambda w, k, t: _starts(w))


def _ext_setup(w: World) -> None:
    vm = _vm_with_disk(w, start=True)
    snapshots.create_snapshot(w.conn, vm, "e1", disk_only=True)


EXT_STEPS = ("delete-snapshot", "merge-plan", "commit", "commit-started", "fix-definition", "remove-overlay",
             "delete-metadata")


def _ext_expect(w: World, k: int) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    if k >= EXT_STEPS.index("fix-definition") + 1:  # pivoted: recovery finishes the delete
        return {_snap_item(w, "e1"), ("file", _overlay(w, "e1"))}, set()
    return set(), set()


def _ext_check(w: World, k: int, task: dict[str, Any]) -> None:
    dom = w.conn.lookupByName(w.vars["vm"])
    assert dom.isActive(), "the VM must keep running through the kill and the recovery"
    assert not dom.blockJobInfo("vda", 0), "a block job was left behind"
    top = snapshots.disks(dom.XMLDesc(0), w.conn)[0]["path"]
    config = snapshots.disks(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), w.conn)[0]["path"]
    if k >= EXT_STEPS.index("fix-definition") + 1:
        assert top == config == w.vars["disk"], (top, config)
        assert "finished deleting snapshot 'e1'" in task["error"], task["error"]
        assert not dom.listAllSnapshots(0) and not os.path.exists(_overlay(w, "e1"))
    else:
        assert top == config == _overlay(w, "e1"), (top, config)
        if k == EXT_STEPS.index("commit-started") + 1:
            assert "aborted the unfinished block commit" in task["error"], task["error"]
        snapshots.delete_snapshot(w.conn, w.vars["vm"], "e1")  # the delete can simply be done again
    dom.destroy()
    _starts(w)


SNAP_DELETE_EXT = KillCase(
    id="snapshot.delete-disk-only-running", kind="vm.snapshot.delete", steps=EXT_STEPS,
    setup=_ext_setup, submit=lambda c, w: c.delete(f"/api/v1/vms/{w.vars['vm']}/snapshots/e1"),
    expect=_ext_expect, check=_ext_check)


CASES = [CREATE, SNAP_CREATE, SNAP_CREATE_EXT, SNAP_REVERT, SNAP_DELETE, SNAP_DELETE_EXT]
POINTS = [p for case in CASES for p in case.points()]


@pytest.mark.parametrize("point", POINTS, ids=[point_id(p) for p in POINTS])
def test_server_killed_at_a_step(point: tuple[KillCase, int], crash_server: CrashServer, conn, prefix, workdir,
                                 micro_guest, micro_image) -> None:
    case, k = point
    kill_at_step(crash_server, case, k, World(conn, prefix, workdir, micro_guest))


def _delete_setup(w: World) -> None:
    disk = w.workdir / "disk.qcow2"
    qemu_img.create(disk, "qcow2", 64 * 1024**2)
    disk.chmod(0o666)
    w.vars["vm"] = w.micro_guest("gone", start=False, disks=[{"path": str(disk), "format": "qcow2"}]).name


def _made_vm(name_key: str) -> Any:
    """``expect`` for copies: once the task defined its new VM, recovery keeps it (and what it names), so the
    new domain, its volumes and files may stay; before that nothing may."""
    def expect(w: World, _k: int) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        from tests.reliability.harness import inventory

        name = w.vars[name_key]
        if name not in {d.name() for d in w.conn.listAllDomains()}:
            return set(), set()
        made = inventory(w.conn, name, w.workdir)  # everything named after the new VM
        return set(), made.items() | {("file", f) for f in inventory(w.conn, w.prefix, w.workdir).files
                                      if os.path.basename(f).startswith(name)}
    return expect


def _clone_setup(w: World) -> None:
    _shut_off_vm(w)
    w.vars["new"] = f"{w.prefix}copy"


def _backup_setup(w: World) -> None:
    _shut_off_vm(w)
    w.vars["dest"] = str(w.workdir / "backup")


def _restore_setup(w: World) -> None:
    from kvmkit.service.copies.backup import backup_vm

    _shut_off_vm(w)
    w.vars["backup"] = str(w.workdir / "backup")
    backup_vm(w.conn, w.vars["vm"], w.vars["backup"])
    w.vars["new"] = f"{w.prefix}restored"


# task kinds whose journal is learned (steps=()): one line each
LEARNED = [
    KillCase(id="vm.delete", kind="vm.delete", steps=(), setup=_delete_setup,
             submit=lambda c, w: c.delete(f"/api/v1/vms/{w.vars['vm']}", params={"storage": True})),
    KillCase(id="vm.clone", kind="vm.clone", steps=(), setup=_clone_setup, expect=_made_vm("new"),
             submit=lambda c, w: c.post(f"/api/v1/vms/{w.vars['vm']}/clone", json={"name": w.vars["new"]})),
    KillCase(id="vm.backup", kind="vm.backup", steps=(), setup=_backup_setup,
             submit=lambda c, w: c.post(f"/api/v1/vms/{w.vars['vm']}/backups",
                                        json={"destination": w.vars["dest"]})),
    KillCase(id="vm.restore", kind="vm.restore", steps=(), setup=_restore_setup, expect=_made_vm("new"),
             submit=lambda c, w: c.post("/api/v1/backups/restore",
                                        json={"path": w.vars["backup"], "name": w.vars["new"]})),
]


@pytest.mark.parametrize("case", LEARNED, ids=[c.id for c in LEARNED])
def test_server_killed_at_every_learned_step(case: KillCase, crash_server: CrashServer, conn, prefix, workdir,
                                             micro_guest, micro_image) -> None:
    tasks = kill_at_every_step(crash_server, case, World(conn, prefix, workdir, micro_guest))
    assert tasks and all(t["state"] == "failed" for t in tasks)
