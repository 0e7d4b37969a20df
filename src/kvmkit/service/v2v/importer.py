"""``vm import``: a VM from another hypervisor's package or disk, made with nothing half-made on failure.

Steps (each a task step with a percent; a cancel is honoured between them):
  1. read and check the source (service/v2v/package.py): refused when unsafe or broken
  2. check each disk as an untrusted image and measure it; the pool must have room for all of them
  3. convert each disk into a new qcow2 volume of the pool (qemu-img, explicit formats)
  4. inspect the guest (libguestfs): OS, BIOS or UEFI, boot loader, virtio drivers, kernel
  5. convert the guest where it needs it (virt-v2v-in-place: Windows, Linux with a boot loader) unless
     ``via`` is kvmkit; a Linux guest without a boot loader boots its own kernel directly instead
  6. define the VM (service/vms/create.py: the OVF's CPUs, memory, disks and NICs; virtio where the guest
     has drivers, SATA/e1000e otherwise) and optionally start it
A failure or cancel at any step deletes the volumes made so far (create_vm undoes its own steps).
"""

from __future__ import annotations

import contextlib
import functools
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.spec.vm_import import ImportSpec

Step = Callable[[str, float | None, str], None]   # (step name, percent or None, message); may raise Cancelled
_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def source_path(conn: libvirt.virConnect, spec: ImportSpec) -> Path:
    """The host file to import: the given path, or the file of the given pool volume (not in use by a VM)."""
    src = spec.source
    if src.path:
        return Path(src.path)
    from kvmkit.service.storage.volumes import get_pool, get_volume, volume_users

    assert src.pool and src.volume
    pool = get_pool(conn, src.pool)
    vol = get_volume(pool, src.volume)
    users = volume_users(conn, src.pool, vol)
    if users:
        raise InvalidState(f"volume '{src.volume}' is in use by VM {', '.join(users)}",
                           hint="import a volume no VM uses (shut it down and detach it first)")
    path = Path(vol.path())
    if not path.is_file():
        raise InvalidInput(f"volume '{src.volume}' is not a file (a {path} device?)",
                           hint="import a volume of a dir pool (upload the package with `kvmkit volume upload`)")
    return path


def planned_name(conn: libvirt.virConnect, spec: ImportSpec) -> str:
    """The VM name an import will use, read cheaply (the OVF descriptor only, no disk is checked)."""
    from kvmkit.service.v2v.package import peek_name

    if spec.name:
        return spec.name
    path = source_path(conn, spec)
    return default_name(None, peek_name(path), path)


def default_name(name: str | None, system_name: str | None, path: Path) -> str:
    if name:
        return name
    for candidate in (system_name, path.stem):
        clean = _BAD.sub("-", candidate or "").strip(".-_")[:64].strip(".-_")
        if clean:
            return clean
    return "imported"


def import_vm(conn: libvirt.virConnect, spec: ImportSpec, *, step: Step | None = None,
              task_id: str | None = None) -> dict[str, Any]:
    """Import ``spec.source`` as a new VM; returns what was made and which path was taken. ``task_id`` goes
    into the VM's metadata (``task``), as for a create, so that an interrupted import can be recovered."""
    from kvmkit.service.v2v import disks as v2v_disks
    from kvmkit.service.v2v.package import open_source
    from kvmkit.service.vms.create import LOCAL_URIS

    say: Step = step or (lambda _n, _p, _m: None)
    uri = conn.getURI().split("?")[0]
    if uri not in LOCAL_URIS and not uri.startswith("test:///"):  # libvirt's test driver lives in this process
        raise InvalidInput(f"vm import converts disks with this host's qemu-img and libguestfs; {conn.getURI()} is "
                           "another host", hint="run the import on that host (kvmkit there, or its API)")
    path = source_path(conn, spec)
    say("read", 2, f"reading {path.name}")
    pkg = open_source(path, progress=lambda m: say("read", None, m))
    name = default_name(spec.name, pkg.system.name if pkg.system else None, path)
    with contextlib.suppress(libvirt.libvirtError):
        conn.lookupByName(name)
        raise Conflict(f"a VM named '{name}' exists already", hint="give another name with --name")
    pool = v2v_disks.pool_for_import(conn, spec.pool)
    say("check", 5, f"checking {len(pkg.disks)} disk(s)")
    checked = v2v_disks.check_disks(pkg)
    need = v2v_disks.check_space(pool, checked)
    volumes = v2v_disks.volume_names(pool, name, len(checked))
    undo: list[Callable[[], None]] = []
    try:
        placed = []
        share = 50.0 / len(checked)
        for i, (disk, vol) in enumerate(zip(checked, volumes, strict=True)):
            base = 10 + i * share
            say("convert", base, f"converting {disk.source.label} ({disk.source.format}) into {pool.name()}/{vol}")

            def converting(pct: float, b: float = base) -> None:
                say("convert-progress", b + share * pct / 100, f"converting: {pct:.0f}%")

            placed.append(v2v_disks.convert_into(pool, disk, vol, undo, progress=converting))
        result = _finish(conn, spec, pkg, name, pool, placed, undo, say, task_id)
    except BaseException:
        for action in reversed(undo):
            with contextlib.suppress(Exception):
                action()
        raise
    result.update({"source": str(path), "kind": pkg.kind, "manifest": pkg.manifest, "pool": pool.name(),
                   "needed_bytes": need,
                   "disks": [{"source": p.checked.source.label, "format": p.checked.source.format,
                              "volume": p.volume, "path": p.path, "virtual_size": p.checked.virtual_size}
                             for p in placed]})
    return result


def _finish(conn: libvirt.virConnect, spec: ImportSpec, pkg: Any, name: str, pool: libvirt.virStoragePool,
            placed: list[Any], undo: list[Callable[[], None]], say: Step, task_id: str | None) -> dict[str, Any]:
    from kvmkit.config import data_dir
    from kvmkit.service.v2v.inspect import inspect_guest

    tmp_root = data_dir() / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="import-", dir=tmp_root) as tmp:
        say("inspect", 62, "inspecting the guest (libguestfs; minutes under TCG)")
        guest = inspect_guest([p.path for p in placed], boot_dir=tmp)
        via = _choose_path(spec.via, guest)
        notes = list(pkg.notes) + list(guest.notes)
        if spec.via == "auto" and via == "kvmkit" and _wants_v2v(guest):
            from kvmkit.service.v2v.virtv2v import available

            notes.append(f"this guest would be converted with virt-v2v, which cannot run here ({available()} "
                         "missing): imported without converting it")
        system = pkg.system
        memory = spec.memory_mib or (system.memory_mib if system else None)
        vcpus = spec.vcpus or (system.vcpus if system else None)
        firmware = guest.firmware or (system.firmware if system else None)  # None: unknown (BIOS unless the OS says)
        if via == "virt-v2v":
            from kvmkit.service.v2v.virtv2v import convert_in_place, warnings_of

            say("virt-v2v", 70, "converting the guest for KVM with virt-v2v-in-place (minutes under TCG)")
            messages = convert_in_place(name, [p.path for p in placed], memory_mib=memory or 1024, vcpus=vcpus or 1,
                                        firmware=firmware or "bios", virtio_win=spec.virtio_win,
                                        progress=lambda m, pct: say("virt-v2v-progress", None, m or f"{pct:.0f}%"))
            notes += warnings_of(messages)[:10]
            if guest.os_type == "windows":  # whether virt-v2v found drivers to install
                guest = inspect_guest([p.path for p in placed])
            else:
                guest.virtio_block = guest.virtio_net = True  # virt-v2v put virtio into the initramfs
                guest.fstab_sd = False
        boot = _boot_files(pool, name, guest, via, undo) if guest.kernel_file and via == "kvmkit" else None
        say("define", 85, f"building the definition of VM {name}")
        vmspec, choice = _vm_spec(spec, pkg, name, pool.name(), placed, guest, via, memory, vcpus, firmware, boot)
        if task_id:
            vmspec = vmspec.updated(metadata={**vmspec.metadata, "task": task_id})
        from kvmkit.service.vms.create import create_vm

        created = create_vm(conn, vmspec, start=spec.start,  # its warnings come back in its result
                            progress=lambda m: None if m.startswith("warning: ") else
                            say("start" if m.startswith("starting") else "define", None, m))
    notes = list(dict.fromkeys(notes + choice + created.get("notes", [])))  # the OS preset may say the same
    return {**created, "name": name, "path": via, "guest": guest.summary(), "boot": "kernel" if boot else
            ("firmware" if guest.bootloader else "unknown"), "notes": notes,
            "warnings": created.get("warnings", []) + ([] if guest.found else
                                                       ["no operating system found on the disks"])}


def _wants_v2v(guest: Any) -> bool:
    return bool(guest.os_type == "windows" or (guest.os_type == "linux" and guest.bootloader))


def _choose_path(via: str, guest: Any) -> str:
    """kvmkit or virt-v2v (see the module docstring)."""
    if via != "auto":
        return via
    if _wants_v2v(guest):
        from kvmkit.service.v2v.virtv2v import available

        return "virt-v2v" if available() is None else "kvmkit"
    return "kvmkit"


def _boot_files(pool: libvirt.virStoragePool, name: str, guest: Any, via: str,
                undo: list[Callable[[], None]]) -> dict[str, str]:
    """The guest's kernel and initrd as files of the pool (``NAME-vmlinuz``, ``NAME-initrd.img``)."""
    from kvmkit.images.plain_copy import copy_file
    from kvmkit.service.storage.volumes import _check_new_name, _pool_target

    _, target = _pool_target(pool)
    out = {}
    for key, src, vol in (("kernel", guest.kernel_file, f"{name}-vmlinuz"),
                          ("initrd", guest.initrd_file, f"{name}-initrd.img")):
        _check_new_name(pool, vol)
        dst = Path(target).resolve() / vol
        copy_file(src, dst, metadata=False)
        undo.append(functools.partial(dst.unlink, missing_ok=True))
        out[key] = str(dst)
    with libvirt_errors(f"refresh pool {pool.name()}"):
        pool.refresh(0)
    return out


def _vm_spec(spec: ImportSpec, pkg: Any, name: str, pool: str, placed: list[Any], guest: Any, via: str,
             memory: int | None, vcpus: int | None, firmware: str | None, boot: dict[str, str] | None
             ) -> tuple[Any, list[str]]:
    from kvmkit.service.osinfo.presets import switch_hint
    from kvmkit.spec.vm import parse_spec

    notes: list[str] = []
    virtio_disk = guest.virtio_block and not guest.fstab_sd
    bus = "virtio" if virtio_disk else "sata"
    model = "virtio" if guest.virtio_net else "e1000e"
    why = ("the guest has virtio drivers" if virtio_disk and guest.virtio_net else
           "its /etc/fstab names /dev/sdX disks, which virtio would rename" if guest.virtio_block and guest.fstab_sd
           else "the guest has no virtio drivers" if guest.found else "no operating system was found to check")
    notes.append(f"disk bus {bus}, NIC model {model}: {why}")
    if bus != "virtio" or model != "virtio":
        notes.append(switch_hint(name))
    data: dict[str, Any] = {
        "name": name,
        "disks": [{"volume": p.volume, "pool": pool, "format": "qcow2", "bus": bus} for p in placed],
        "metadata": {"imported_from": pkg.path.name[:200], "import_path": via},
    }
    if firmware:
        data["firmware"] = firmware
    if memory:
        data["memory_mib"] = memory
    if vcpus:
        data["vcpus"] = vcpus
    count = len(pkg.system.nics) if pkg.system and pkg.system.nics else 1
    data["nics"] = [{"type": "network", "source": spec.network, "model": model} for _ in range(count)] \
        if spec.network else []
    if pkg.system and pkg.system.nics and any(n.mac for n in pkg.system.nics):
        notes.append("the source's MAC addresses are not kept: the NICs get new ones")
    os_name = spec.os or _known_os(guest.osinfo)
    if os_name:
        data["os"] = os_name
    if boot:
        cmdline = guest.cmdline or (f"root=UUID={guest.root_uuid} ro" if guest.root_uuid else "root=/dev/vda ro")
        if "console=" not in cmdline:
            cmdline += " console=tty0 console=ttyS0"
        data.update(kernel=boot["kernel"], initrd=boot["initrd"], cmdline=cmdline)
        notes.append(f"the disks have no boot loader: the VM boots the guest's own kernel ({guest.kernel}) "
                     f"directly, copied into pool {pool} as {name}-vmlinuz and {name}-initrd.img (update them after "
                     "a kernel upgrade in the guest, or install a boot loader and drop --kernel)")
    elif guest.found and not guest.bootloader and guest.os_type == "linux":
        notes.append("the disks have no boot loader and no kernel in /boot: the VM will not boot as it is")
    return parse_spec(data), notes


def _known_os(short_id: str | None) -> str | None:
    """libguestfs's osinfo id when kvmkit's database knows it (or a release of its series)."""
    if not short_id or short_id == "unknown":
        return None
    from kvmkit.service.osinfo.lookup import find

    try:
        return find(short_id).entry.short_id
    except NotFound:
        return None
