"""Task bodies for copies of VMs (clone, backup, restore) and the start-up clean-up after an interrupted one.

Each body journals a step naming what it is about to make (the new VM's name, the directories its files go
to, the backup destination) before the service function runs, and turns the service's 0-100 progress into
the task's percent and message. The service functions undo their own work when they fail; what they cannot
undo is a server that dies mid-copy. For that, ``recover_*`` run at the next start (registered with the
task runner, like a VM create's):

- clone / restore: the new VM is defined as the very last step, so a defined VM is a finished copy and is
  kept. Otherwise the files named after the new VM (``NEW-vda.qcow2``, ``NEW_VARS.fd``) that appeared in
  the journalled directories after the task started and that no VM uses are deleted; a linked clone's
  snapshot ``linked-NEW`` on the source is deleted again (its overlay merged back).
- backup: the manifest is written last, so a destination with ``manifest.json`` is a finished backup and
  is kept; otherwise a destination the task created is removed, a libvirt backup job still running on the
  VM into kvmkit's scratch directory is aborted, and scratch files made after the task started are removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
from lxml import etree

from kvmkit.api.jobs.vms import _made_after, _owned_by_vm, _paths_in_use
from kvmkit.service.tasks.runner import TaskContext


def progress_to(ctx: TaskContext, start: float, end: float, message: str) -> Any:
    """A service progress callback (0..100) writing start..end into the task, once per whole percent."""
    last = [-1]

    def report(pct: float) -> None:
        value = int(start + (end - start) * max(0.0, min(100.0, pct)) / 100.0)
        if value != last[0]:
            last[0] = value
            ctx.progress(value, f"{message} ({int(pct)}%)")

    return report


@contextlib.contextmanager
def _os_errors(what: str) -> Iterator[None]:
    """A file the copy could not write or read fails the task saying which, not as an internal error."""
    from kvmkit.errors import OperationFailed

    try:
        yield
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise OperationFailed(f"{what}: {err.strerror or err}{where}",
                              hint="check the path, its permissions and the free space") from err


def _file_dirs(conn: libvirt.virConnect, name: str) -> list[str]:
    """Directories holding the VM's disk files and NVRAM: where a copy's new files go."""
    from kvmkit.service.copies import snapshots

    dom = snapshots.lookup(conn, name)
    xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    paths = [d["path"] for d in snapshots.disks(xml, conn) if d["path"]]
    nvram = etree.fromstring(xml.encode()).findtext("os/nvram")
    if nvram:
        paths.append(nvram)
    return sorted({str(Path(p).parent) for p in paths})


def clone_body(conn_get: Any, hold: Any, src: str, new: str, linked: bool) -> Any:
    def body(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.copies.clone import clone_vm

        conn = worker_connection(conn_get())
        ctx.step("clone", 5, f"cloning VM {src} as {new} ({'linked' if linked else 'full'})", vm=new, source=src,
                 linked=linked, dirs=_file_dirs(conn, src))
        ctx.check_cancel()  # a cancel asked while the step was journalled: nothing is made yet
        with hold(f"vm:{new}", "vm.clone"), _os_errors(f"cloning VM {src}"):
            return clone_vm(conn, src, new, linked=linked, progress=progress_to(ctx, 5, 99, f"cloning {src}"))

    return body


def backup_body(conn_get: Any, name: str, dest: str) -> Any:
    def body(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.copies.backup import backup_vm

        conn = worker_connection(conn_get())
        ctx.step("backup", 5, f"backing up VM {name} to {dest}", vm=name, dest=dest,
                 created=not os.path.exists(dest))
        ctx.check_cancel()
        with _os_errors(f"backing up VM {name} to {dest}"):
            manifest = backup_vm(conn, name, dest, progress=progress_to(ctx, 5, 99, f"backing up {name}"))
        return {**manifest, "path": dest}

    return body


def _pool_dir(conn: libvirt.virConnect, pool: str) -> str | None:
    with contextlib.suppress(libvirt.libvirtError):
        return etree.fromstring(conn.storagePoolLookupByName(pool).XMLDesc(0).encode()).findtext("target/path")
    return None


def restore_body(conn_get: Any, path: str, new: str, name: str | None, pool: str | None,
                 nvram: str | None) -> Any:
    """The task holds vm:NEW already (its target)."""
    def body(ctx: TaskContext) -> dict[str, Any]:
        from kvmkit.hypervisor.connection import worker_connection
        from kvmkit.service.copies.restore import restore_vm

        conn = worker_connection(conn_get())
        dirs = [d for d in (_pool_dir(conn, pool or "default"), nvram and str(Path(nvram).parent)) if d]
        ctx.step("restore", 5, f"restoring {path} as VM {new}", vm=new, path=path, pool=pool or "default",
                 dirs=dirs)
        ctx.check_cancel()
        with _os_errors(f"restoring {path} as VM {new}"):
            return restore_vm(conn, path, name=name, pool=pool,
                              progress=progress_to(ctx, 5, 99, f"restoring {new}"))

    return body


# --- recovery --------------------------------------------------------------------------------------

def _journalled(steps: list[dict[str, Any]], key: str) -> Any:
    for s in steps:
        if s.get("data") and key in s["data"]:
            return s["data"][key]
    return None


def _exists(conn: libvirt.virConnect, name: str) -> bool:
    try:
        conn.lookupByName(name)
        return True
    except libvirt.libvirtError:
        return False


def _remove_new_files(conn: libvirt.virConnect, task: dict[str, Any], vm: str, dirs: list[str]) -> list[str]:
    """Delete the files named after ``vm`` in ``dirs`` that appeared after the task started and no VM uses."""
    from kvmkit.service.copies import snapshots

    report: list[str] = []
    in_use = _paths_in_use(conn)
    for d in dirs:
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for fname in names:
            path = os.path.join(d, fname)
            if not _owned_by_vm(fname, vm) or path in in_use or not os.path.isfile(path):
                continue
            made = _made_after(path, task.get("created_at"))
            if made is None:
                report.append(f"left {path} (named after {vm}; cannot tell whether this task made it): "
                              "check and delete it by hand")
            elif made:
                try:
                    os.unlink(path)
                    report.append(f"deleted half-made file {path}")
                except OSError as err:
                    report.append(f"could not delete {path}: {err}; remove it by hand")
    snapshots.refresh_pools(conn)
    return report


def recover_clone(conn: libvirt.virConnect, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    intent = task.get("intent") or {}
    new, src = intent.get("vm") or "", intent.get("source") or ""
    if not new:
        return []
    if _exists(conn, new):
        return [f"kept VM {new}: it was defined, the clone's last step"]
    report = _remove_new_files(conn, task, new, _journalled(steps, "dirs") or [])
    snap = f"linked-{new}"[:64]
    if intent.get("linked") and src:
        from kvmkit.errors import KvmkitError
        from kvmkit.service.copies import snapshots

        try:
            dom = conn.lookupByName(src)
            dom.snapshotLookupByName(snap, 0)
        except libvirt.libvirtError:
            return report
        try:
            snapshots.delete_snapshot(conn, src, snap)
            report.append(f"deleted snapshot {snap} of {src} (the base of the unfinished linked clone)")
        except KvmkitError as err:
            report.append(f"could not delete snapshot {snap} of {src}: {err.message}; "
                          f"`kvmkit snapshot delete {src} {snap}`")
    return report


def recover_restore(conn: libvirt.virConnect, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    new = (task.get("intent") or {}).get("vm") or ""
    if not new:
        return []
    if _exists(conn, new):
        return [f"kept VM {new}: it was defined, the restore's last step"]
    return _remove_new_files(conn, task, new, _journalled(steps, "dirs") or [])


def _abort_backup_job(conn: libvirt.virConnect, vm: str, scratch_root: Path) -> list[str]:
    """Abort a backup job of ``vm`` still writing into kvmkit's scratch directory (the dead server's)."""
    try:
        dom = conn.lookupByName(vm)
        if not dom.isActive():
            return []
        job = etree.fromstring(dom.backupGetXMLDesc(0).encode())
    except libvirt.libvirtError:
        return []  # no VM, or no backup job
    scratch = [el.get("file", "") for el in job.iterfind("disks/disk/scratch")]
    if scratch and all(Path(f).resolve().is_relative_to(scratch_root.resolve()) for f in scratch):
        try:
            dom.abortJob()
            return [f"aborted the backup job still running on VM {vm}"]
        except libvirt.libvirtError as err:
            return [f"could not abort the backup job of VM {vm}: {err.get_error_message()}"]
    return []


def _scratch_in_use(conn: libvirt.virConnect) -> set[str]:
    used: set[str] = set()
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        with contextlib.suppress(libvirt.libvirtError):
            job = etree.fromstring(dom.backupGetXMLDesc(0).encode())
            used |= {str(Path(el.get("file", "")).parent) for el in job.iterfind("disks/disk/scratch")}
    return used


def recover_backup(conn: libvirt.virConnect, task: dict[str, Any], steps: list[dict[str, Any]]) -> list[str]:
    from kvmkit.config import data_dir
    from kvmkit.service.copies.backup import MANIFEST

    vm = (task.get("intent") or {}).get("vm") or ""
    dest = _journalled(steps, "dest")
    scratch_root = data_dir() / "backup-tmp"
    report = _abort_backup_job(conn, vm, scratch_root) if vm else []
    if dest and os.path.isdir(dest):
        if os.path.isfile(os.path.join(dest, MANIFEST)):
            report.append(f"kept {dest}: the backup was complete (its manifest is written last)")
        elif _journalled(steps, "created"):
            shutil.rmtree(dest, ignore_errors=True)
            report.append(f"removed the unfinished backup {dest}")
        else:
            report.append(f"left the unfinished backup in {dest} (the directory existed before): empty it by hand")
    if scratch_root.is_dir():
        began = time.time()  # scratch made from now on is a live backup's (the CLI's), not the dead server's
        busy = _scratch_in_use(conn)
        for entry in sorted(scratch_root.iterdir()):
            with contextlib.suppress(OSError):
                if str(entry) in busy or entry.stat().st_ctime >= began:
                    continue
            if _made_after(str(entry), task.get("created_at")):
                shutil.rmtree(entry, ignore_errors=True)
                report.append(f"removed scratch files {entry}")
    return report


def register() -> None:
    from kvmkit.service.tasks.runner import RECOVERY

    RECOVERY["vm.clone"] = recover_clone
    RECOVERY["vm.restore"] = recover_restore
    RECOVERY["vm.backup"] = recover_backup
