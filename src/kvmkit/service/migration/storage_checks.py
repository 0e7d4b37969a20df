"""The pre-checks of a migration's files: disks (shared — the destination sees the same file — or, with
copy_storage, absent there and creatable in a pool at the same directory), boot files (kernel, initrd,
loader, NVRAM: present there) and serial logs (their directory there). Files are seen through each host's
libvirt (files.py)."""

from __future__ import annotations

import os

import libvirt

from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.service.migration.files import FileView, active_pools, same_file, view_files
from kvmkit.service.migration.model import Check, DiskPlan, Endpoint, Plan
from kvmkit.spec.migration import MigrateSpec
from kvmkit.xml.migration import DiskRef, DomainNeeds


def _pool_hint(host: str, directory: str) -> str:
    return (f"define a pool there: kvmkit --host {host} pool define NAME --type dir --target {directory} && "
            f"kvmkit --host {host} pool build NAME && kvmkit --host {host} pool start NAME")


def _resolve_volumes(conn: libvirt.virConnect, disks: list[DiskRef]) -> None:
    """``type='volume'`` disks: their pool/volume as a path on this host."""
    for disk in disks:
        if disk.source_type == "volume":
            pool, _, vol = disk.path.partition("/")
            try:
                disk.path = conn.storagePoolLookupByName(pool).storageVolLookupByName(vol).path()
                disk.source_type = "file"
            except libvirt.libvirtError:
                pass


def storage_checks(src: Endpoint, dst: Endpoint, needs: DomainNeeds, spec: MigrateSpec, mode: str,
                   plan: Plan) -> list[Check]:
    """The storage, boot-files and serial-log checks; fills ``plan.disks``."""
    _resolve_volumes(src.conn, needs.disks)
    files = [d for d in needs.disks if d.source_type == "file"] + needs.files
    with libvirt_errors(f"looking at the VM's files on hosts {src.name} and {dst.name}"):
        src_pools, dst_pools = active_pools(src.conn), active_pools(dst.conn)
        paths = [f.path for f in files if f.kind != "log"]
        log_dirs = sorted({os.path.dirname(f.path) for f in files if f.kind == "log"})
        before = view_files(src.conn, paths + [f.path for f in files if f.kind == "log"], src_pools)
        dest = view_files(dst.conn, paths + [f.path for f in files if f.kind == "log"], dst_pools)
        after = view_files(src.conn, paths + [f.path for f in files if f.kind == "log"], src_pools)
    checks: list[Check] = []
    problems: list[str] = []
    fixes: list[str] = []
    warnings: list[str] = []
    done: list[str] = []
    for disk in needs.disks:
        if disk.source_type == "network":
            plan.disks.append(DiskPlan(disk.target, disk.path, disk.kind, disk.readonly, "shared"))
            done.append(f"{disk.target}: network storage")
            continue
        if disk.source_type != "file":
            if spec.copy_storage and not disk.readonly:
                problems.append(f"{disk.target} ({disk.path}) is a {disk.source_type} disk: kvmkit copies files only")
                fixes.append("move it onto a file in a pool, or give both hosts the same device")
            else:
                warnings.append(f"{disk.target} is a {disk.source_type} disk ({disk.path}): libvirt shows no "
                                f"devices, make sure host {dst.name} has the same one")
                plan.disks.append(DiskPlan(disk.target, disk.path, disk.kind, disk.readonly, "shared"))
            continue
        _disk_verdict(disk, before[disk.path], dest[disk.path], after[disk.path], src, dst, spec, plan,
                      dst_pools, problems, fixes, warnings, done)
    checks.append(_verdict("storage", problems, fixes, warnings, done or ["no disks"]))
    problems, fixes, warnings, done = [], [], [], []
    for ref in needs.files:
        if ref.kind == "log":
            continue
        view, seen = dest[ref.path], before[ref.path]
        if not view.exists:
            problems.append(f"host {dst.name} has no {ref.target} file {ref.path}")
            fixes.append(f"copy it to host {dst.name} at the same path (or put it on storage both hosts share)")
            continue
        same = same_file(seen, view, after[ref.path])
        plan.disks.append(DiskPlan(ref.target, ref.path, ref.kind, ref.readonly, "shared", same_file=same))
        if same is False:
            warnings.append(f"host {dst.name} has its own {ref.target} file at {ref.path} (not the same file)")
        else:
            done.append(f"{ref.target} {ref.path}")
    if [f for f in needs.files if f.kind != "log"]:
        checks.append(_verdict("boot-files", problems, fixes, warnings, done))
    problems, fixes, warnings, done = [], [], [], []
    for ref in (f for f in needs.files if f.kind == "log"):
        view = dest[ref.path]
        if not view.dir_exists:
            text = f"host {dst.name} has no directory {os.path.dirname(ref.path)} for the serial log {ref.path}"
            if mode == "live":
                problems.append(text)
            else:
                warnings.append(text)
            fixes.append(f"create it on host {dst.name} (mkdir -p {os.path.dirname(ref.path)})")
            continue
        same = same_file(before[ref.path], view, after[ref.path]) if view.exists else False
        plan.disks.append(DiskPlan(ref.target, ref.path, ref.kind, False, "shared" if same else "none",
                                   same_file=same))
        if same:
            done.append(f"the serial log {ref.path} is the same file on both hosts: its history continues there")
        else:
            warnings.append(f"host {dst.name} writes its own serial log at {ref.path}; what host {src.name} "
                            "wrote stays in host " f"{src.name}'s file")
    if log_dirs:
        checks.append(_verdict("serial-log", problems, fixes, warnings, done))
    return checks


def _disk_verdict(disk: DiskRef, before: FileView, dest: FileView, after: FileView, src: Endpoint, dst: Endpoint,
                  spec: MigrateSpec, plan: Plan, dst_pools: dict[str, tuple[str, str]], problems: list[str],
                  fixes: list[str], warnings: list[str], done: list[str]) -> None:
    facts = before.facts or {}
    entry = DiskPlan(disk.target, disk.path, disk.kind, disk.readonly, "shared", facts.get("format") or disk.format,
                     facts.get("capacity"), facts.get("allocation"), before.pool)
    if not before.exists:
        problems.append(f"{disk.target}: host {src.name}'s libvirt cannot see {disk.path}")
        fixes.append("check the VM's disk paths (kvmkit vm show NAME)")
        return
    if spec.copy_storage and not disk.readonly:
        directory = os.path.dirname(disk.path)
        if plan.mode == "offline" and facts.get("backing"):
            problems.append(f"{disk.target}: {disk.path} is an overlay on {facts['backing']}: an offline copy "
                            "moves the file as it is, without its base")
            fixes.append("migrate it live (QEMU copies the whole chain into one image), or give the destination "
                         "the base at the same path")
            return
        if dest.exists:
            same = same_file(before, dest, after)
            if same:
                problems.append(f"{disk.target}: {disk.path} is on storage host {dst.name} shares: nothing to copy")
                fixes.append("leave out --copy-storage (the disks are shared)")
            else:
                problems.append(f"{disk.target}: host {dst.name} has a file at {disk.path} already")
                fixes.append(f"remove it on host {dst.name} (kvmkit --host {dst.name} volume delete POOL "
                             f"{os.path.basename(disk.path)}) if it is a leftover, then retry")
            return
        pool = dst_pools.get(os.path.normpath(directory))
        if pool is None:
            problems.append(f"{disk.target}: host {dst.name} has no running storage pool at {directory} to create "
                            f"{os.path.basename(disk.path)} in (copy-storage needs the disk at the same path)")
            fixes.append(_pool_hint(dst.name, directory))
            return
        need = int(facts.get("allocation") or facts.get("capacity") or 0)
        try:
            free = int(dst.conn.storagePoolLookupByName(pool[0]).info()[3])
        except libvirt.libvirtError:
            free = None
        if free is not None and need > free:
            problems.append(f"{disk.target}: pool {pool[0]} on host {dst.name} has {free // 2**20} MiB free, the "
                            f"disk needs up to {need // 2**20} MiB")
            fixes.append(f"free space in pool {pool[0]} on host {dst.name}")
            return
        entry.action, entry.dest_pool = "copy", pool[0]
        plan.disks.append(entry)
        done.append(f"{disk.target}: {facts.get('format') or 'raw'} {int(facts.get('capacity') or 0) // 2**20} MiB, "
                    f"created in pool {pool[0]} on host {dst.name} and copied")
        return
    if not dest.exists:
        if not dest.dir_exists:
            problems.append(f"{disk.target}: host {dst.name} has no directory {os.path.dirname(disk.path)}")
        else:
            problems.append(f"{disk.target}: host {dst.name} has no file {disk.path}: the storage is not shared")
        fixes.append("copy the disks with --copy-storage, or put them on storage both hosts mount at the same "
                     "path (NFS, a cluster filesystem, Ceph)" if not disk.readonly else
                     f"put {disk.path} on host {dst.name} at the same path")
        return
    same = same_file(before, dest, after)
    entry.same_file = same
    entry.dest_pool = dest.pool
    if same is False:
        if disk.readonly:
            warnings.append(f"{disk.target}: host {dst.name} has its own {disk.path} (read-only: the VM reads that "
                            "copy there)")
            plan.disks.append(entry)
            return
        problems.append(f"{disk.target}: host {dst.name} has a different file at {disk.path} (its size or "
                        "change time differ): not storage both hosts share")
        fixes.append("use --copy-storage after removing host "
                     f"{dst.name}'s file, or put the disk on storage both hosts share")
        return
    plan.disks.append(entry)
    if same is None:
        warnings.append(f"{disk.target}: host {dst.name} has {disk.path}; libvirt gave no timestamps to prove "
                        "it is the same file")
    else:
        done.append(f"{disk.target}: {disk.path} is the same file on host {dst.name} (shared)")


def _verdict(name: str, problems: list[str], fixes: list[str], warnings: list[str], done: list[str]) -> Check:
    if problems:
        return Check(name, "fail", "; ".join(problems + warnings), "; ".join(dict.fromkeys(fixes)) or None)
    if warnings:
        return Check(name, "warn", "; ".join(warnings + done), "; ".join(dict.fromkeys(fixes)) or None)
    return Check(name, "pass", "; ".join(done))
