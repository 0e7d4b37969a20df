"""Start-up clean-up after an interrupted clone, restore or backup (kvmkit.api.jobs.vm_copies), on real
libvirt and real files: what the dead task made (files named after the new VM that appeared after it
started, a linked clone's snapshot, an unfinished backup directory) goes; what it did not make, what a VM
uses and a copy that was finished stay."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import libvirt
import pytest

from kvmkit.api.jobs import vm_copies as vm_copy_jobs
from kvmkit.images import qemu_img
from kvmkit.service.copies import snapshots

pytestmark = pytest.mark.guest


def _qcow2(path: Path) -> str:
    qemu_img.create(path, "qcow2", 16 * 1024**2)
    path.chmod(0o666)
    return str(path)


def _task(intent: dict) -> dict:
    return {"id": str(uuid.uuid4()), "target": f"vm:{intent['vm']}", "intent": intent,
            "created_at": datetime.now(UTC).isoformat()}


def test_interrupted_clone_removes_its_files_and_linked_snapshot(conn, micro_guest, workdir, prefix) -> None:
    src = micro_guest("src", start=False, disks=[{"path": _qcow2(workdir / "src.qcow2"), "format": "qcow2"}])
    new = f"{prefix}new"
    old = _qcow2(workdir / f"{new}-old.qcow2")  # named after the clone but older than the task: not its work
    other = micro_guest("user", start=False, disks=[{"path": _qcow2(workdir / f"{new}-inuse.qcow2"),
                                                      "format": "qcow2"}])
    time.sleep(2.5)  # let the task start clearly after those files (the check allows 2 s of clock skew)
    task = _task({"vm": new, "source": src.name, "linked": True})
    made = _qcow2(workdir / f"{new}-vda.qcow2")
    snapshots.create_snapshot(conn, src.name, f"linked-{new}", disk_only=True)
    overlay = snapshots.disks(src.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), conn)[0]["path"]
    assert overlay != str(workdir / "src.qcow2")
    steps = [{"seq": 1, "name": "clone", "data": {"vm": new, "dirs": [str(workdir)]}}]

    report = vm_copy_jobs.recover_clone(conn, task, steps)

    assert f"deleted half-made file {made}" in report
    assert not Path(made).exists()
    assert Path(old).exists() and (workdir / f"{new}-inuse.qcow2").exists()
    assert any(line.startswith(f"deleted snapshot linked-{new} of {src.name}") for line in report), report
    assert [s["name"] for s in snapshots.list_snapshots(conn, src.name)] == []
    assert snapshots.disks(src.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), conn)[0]["path"] == \
        str(workdir / "src.qcow2")  # merged back: the source writes to its own disk again
    assert other.dom.isPersistent()


def test_interrupted_copy_keeps_a_defined_vm(conn, micro_guest, workdir) -> None:
    done = micro_guest("done", start=False)
    _qcow2(workdir / f"{done.name}-vda.qcow2")
    for recover, kind in ((vm_copy_jobs.recover_clone, "clone"), (vm_copy_jobs.recover_restore, "restore")):
        report = recover(conn, _task({"vm": done.name, "source": "x"}), [{"data": {"dirs": [str(workdir)]}}])
        assert report == [f"kept VM {done.name}: it was defined, the {kind}'s last step"]
    assert (workdir / f"{done.name}-vda.qcow2").exists()


def test_interrupted_restore_removes_its_files(conn, workdir, prefix) -> None:
    new = f"{prefix}rs"
    task = _task({"vm": new, "path": "/nowhere", "pool": "default"})
    made = _qcow2(workdir / f"{new}-vda.qcow2")
    report = vm_copy_jobs.recover_restore(conn, task, [{"data": {"vm": new, "dirs": [str(workdir)]}}])
    assert report == [f"deleted half-made file {made}"] and not Path(made).exists()


def test_interrupted_backup_removes_an_unfinished_directory_only(conn, workdir, prefix, monkeypatch) -> None:
    monkeypatch.setenv("KVMKIT_DATA_DIR", str(workdir))  # its scratch directory, not the shared one
    vm = f"{prefix}b"
    scratch_old = workdir / "backup-tmp" / "before"
    scratch_old.mkdir(parents=True)
    time.sleep(2.5)
    unfinished, finished, existing = workdir / "unfinished", workdir / "finished", workdir / "existing"
    for d in (unfinished, finished, existing):
        d.mkdir()
        (d / "vda.qcow2").write_bytes(b"partial")
    (finished / "manifest.json").write_text("{}")

    task = _task({"vm": vm})

    def recover(dest: Path, created: bool) -> list[str]:
        steps = [{"data": {"vm": vm, "dest": str(dest), "created": created}}]
        return vm_copy_jobs.recover_backup(conn, task, steps)

    scratch = workdir / "backup-tmp" / "dead-server"
    scratch.mkdir()
    (scratch / "vda.qcow2").write_bytes(b"scratch")
    assert recover(unfinished, True) == [f"removed the unfinished backup {unfinished}",
                                         f"removed scratch files {scratch}"]
    assert not unfinished.exists() and not scratch.exists()
    assert scratch_old.exists()  # older than the task: another backup's
    assert recover(finished, True) == [f"kept {finished}: the backup was complete (its manifest is written last)"]
    assert (finished / "manifest.json").exists()
    assert "empty it by hand" in recover(existing, False)[0] and (existing / "vda.qcow2").exists()
