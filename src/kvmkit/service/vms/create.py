"""Create a VM from a VMSpec: check everything first, then create volumes, define, optionally start.

Nothing half-made: every step records how to undo it, and any failure (or Ctrl-C) undoes the steps
already taken (started domain destroyed, definition undefined, created volumes deleted) before raising.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

import libvirt
from lxml import etree

from kvmkit.errors import Conflict, InvalidInput, KvmkitError, NotFound, OperationFailed
from kvmkit.hypervisor.errors import libvirt_errors
from kvmkit.spec.vm import DiskSpec, NicSpec, VMSpec, parse_spec

Progress = Callable[[str], None]
LOCAL_URIS = ("qemu:///system", "qemu:///session", "qemu:///embed")


def _is_local(conn: libvirt.virConnect) -> bool:
    return conn.getURI().split("?")[0] in LOCAL_URIS


def _exists_by(fn: Callable[[str], Any], key: str) -> Any | None:
    try:
        return fn(key)
    except libvirt.libvirtError:
        return None


def _pool(conn: libvirt.virConnect, name: str) -> libvirt.virStoragePool:
    pool = _exists_by(conn.storagePoolLookupByName, name)
    if pool is None:
        raise NotFound(f"storage pool '{name}' not found", hint="see `kvmkit pool list`, or give pool=NAME")
    if not pool.isActive():
        raise InvalidInput(f"storage pool '{name}' is not active", hint=f"start it: kvmkit pool start {name}")
    return pool


def _pool_dir(pool: libvirt.virStoragePool) -> str:
    path = etree.fromstring(pool.XMLDesc(0).encode()).findtext("target/path")
    if not path:
        raise InvalidInput(f"storage pool '{pool.name()}' has no target directory",
                           hint="new disks need a dir/fs/netfs pool")
    return path


def _check_path(what: str, path: str, *, local: bool) -> None:
    if local and not os.path.exists(path):
        raise NotFound(f"{what} {path} does not exist", hint=f"check the {what} path (give an absolute path)")


def _detect_format(path: str) -> str:
    from kvmkit.images.qemu_img import probe_format

    fmt = probe_format(path)
    if fmt not in ("raw", "qcow2"):
        raise InvalidInput(f"disk {path} is a {fmt} image; kvmkit runs raw and qcow2 disks",
                           hint=f"convert it: kvmkit image convert {path} NEW.qcow2 --format qcow2")
    return fmt


def resolve(conn: libvirt.virConnect, spec: VMSpec, progress: Progress) -> tuple[VMSpec, list[dict[str, Any]]]:
    """Check the spec against the host and fill in what create decides (kernel for --micro, virt type,
    serial log, MACs, disk formats, paths of new volumes). Creates nothing. Returns the final spec and
    the plan of volumes to create."""
    from kvmkit.host.virt_type import choose_virt_type
    from kvmkit.service.vms.macs import reserve

    local = _is_local(conn)
    os_report: dict[str, Any] | None = None
    if spec.os or spec.virtio_win:
        from kvmkit.service.osinfo.presets import apply_preset

        applied = apply_preset(spec)  # the OS's devices and sizes where the caller gave none
        for warning in applied.warnings:
            progress(f"warning: {warning}")
        spec, os_report = applied.spec, applied.report()
    if _exists_by(conn.lookupByName, spec.name) is not None:
        raise Conflict(f"a VM named '{spec.name}' already exists",
                       hint="choose another name or delete it first (kvmkit vm delete NAME)")
    if spec.uuid:
        other = _exists_by(conn.lookupByUUIDString, spec.uuid)
        if other is not None:
            raise Conflict(f"UUID {spec.uuid} is already used by VM '{other.name()}'",
                           hint="leave the UUID out to get a new one")
    changes: dict[str, Any] = {"metadata": dict(spec.metadata)}
    if spec.graphics is not None and not spec.graphics.password and spec.graphics.auto_password:
        import secrets

        # a VNC/SPICE server always has a password unless the spec says auto_password=false; libvirt hands
        # it to QEMU over QMP (never on its command line); VNC uses 8 characters of it
        changes["graphics"] = spec.graphics.model_copy(update={"password": secrets.token_urlsafe(6)}).model_dump()
    if spec.micro:
        from kvmkit.images import micro

        progress("building the micro-guest (cached after the first time)")
        image = micro.build()
        changes.update(kernel=image.kernel, initrd=image.initrd, cmdline=image.cmdline, micro=False)
        changes["metadata"]["micro"] = "yes"
    if spec.hugepages and spec.memory_source is None and local and not _hugetlbfs_mounted():
        # libvirt backs <hugepages/> with a hugetlbfs mount; without one, memfd gives huge pages all the same
        changes["memory_source"] = "memfd"
    virt_type, why = choose_virt_type(spec.virt_type, conn)  # as probed on that host
    changes["virt_type"] = virt_type
    changes["metadata"]["virt_type_reason"] = why
    if virt_type == "qemu" and spec.cpu_mode == "host-passthrough":
        raise InvalidInput("cpu mode host-passthrough needs KVM, but this VM runs under qemu (TCG)",
                           hint="use --cpu host-model or a named model, or --virt-type kvm on a KVM host")
    kernel = changes.get("kernel") or spec.kernel
    if spec.profile == "fast-boot" and kernel:
        from kvmkit.images.micro import fast_boot_kernel
        from kvmkit.spec.profiles import KERNEL_NOTE_KEY

        kernel, note = fast_boot_kernel(kernel)
        if note:
            changes["kernel"] = kernel
            changes["metadata"][KERNEL_NOTE_KEY] = note
    for what in ("kernel", "initrd"):
        path = changes.get(what) or getattr(spec, what)
        if path:
            _check_path(what, path, local=local)
    if spec.serial:
        changes["serial_log"] = spec.default_serial_log()
    if spec.firmware == "uefi" and not spec.machine:
        changes["machine"] = "q35"  # libvirt's OVMF descriptors (secure boot, SMM) want q35

    plan: list[dict[str, Any]] = []
    disks: list[DiskSpec] = []
    if spec.template:
        from kvmkit.service.storage.templates import get_template

        get_template(spec.template)  # NotFound naming it, before anything is created
        changes["metadata"]["template"] = spec.template
        vol = f"{spec.name}-disk0.qcow2"
        plan.append({"kind": "template", "template": spec.template, "volume": vol, "pool": None,
                     "linked": not spec.full_clone})
        disks.append(DiskSpec(path="/template/pending", format="qcow2"))  # path known after provisioning
    for disk in spec.disks:
        fmt: str | None
        index = len(disks)
        if disk.is_new:
            fmt = disk.format or "qcow2"
            pool = _pool(conn, disk.pool or "default")
            vol = f"{spec.name}-disk{index}.{fmt}"
            if _exists_by(pool.storageVolLookupByName, vol) is not None:
                raise Conflict(f"volume '{vol}' already exists in pool '{pool.name()}'",
                               hint="delete it (kvmkit volume delete) or choose another VM name")
            path = os.path.join(_pool_dir(pool), vol)
            plan.append({"kind": "volume", "pool": pool.name(), "volume": vol, "format": fmt,
                         "size": disk.size, "path": path})
            disks.append(disk.model_copy(update={"size": None, "path": path, "format": fmt, "pool": None}))
        elif disk.volume:
            pool = _pool(conn, disk.pool or "default")
            vol_obj = _exists_by(pool.storageVolLookupByName, disk.volume)
            if vol_obj is None:
                raise NotFound(f"volume '{disk.volume}' not found in pool '{pool.name()}'",
                               hint="see `kvmkit volume list POOL`")
            fmt = disk.format or etree.fromstring(vol_obj.XMLDesc(0).encode()).find("target/format").get("type")
            if fmt not in ("raw", "qcow2"):
                raise InvalidInput(f"volume '{disk.volume}' is {fmt}; kvmkit runs raw and qcow2 disks")
            disks.append(disk.model_copy(update={"format": fmt}))
        else:
            what = "ISO" if disk.device == "cdrom" else "disk"
            if disk.path:
                _check_path(what, disk.path, local=local)
            fmt = disk.format
            if fmt is None and disk.path and local and not disk.is_block:
                fmt = "raw" if disk.device == "cdrom" else _detect_format(disk.path)
            if disk.path and local and not disk.is_block and disk.device != "cdrom":
                from kvmkit.images.qemu_img import inspect_untrusted

                # an imported image must be what it is declared to be and name no other file
                inspect_untrusted(disk.path, fmt or "raw")
            disks.append(disk.model_copy(update={"format": fmt or "raw"}))
    if spec.cloud_init is not None:
        step = _plan_cidata(conn, spec)
        plan.append(step)
        changes["metadata"]["cidata"] = step["volume"]
        if spec.cloud_init.eject:
            changes["metadata"]["cidata_eject"] = "pending"  # service/vms/seed.py ejects it after cloud-init
        disks.append(DiskSpec(path=step["path"], format="raw", bus="virtio", readonly=True))
    changes["disks"] = [d.model_dump() for d in disks]

    for nic in spec.nics:
        if nic.type == "network" and _exists_by(conn.networkLookupByName, nic.source) is None:
            raise NotFound(f"network '{nic.source}' not found", hint="see `kvmkit net list`, or use --network none")
        if nic.type != "network" and local and not os.path.exists(f"/sys/class/net/{nic.source}"):
            what = "bridge" if nic.type == "bridge" else "device"
            raise NotFound(f"host {what} '{nic.source}' not found",
                           hint="see `ip link`; create a bridge with `kvmkit net create NAME --mode bridge`")
    # last check: the MACs stay held in this process until create_vm has defined the VM (or failed)
    macs = reserve(conn, spec.name, [nic.mac for nic in spec.nics])
    nics: list[NicSpec] = [nic.model_copy(update={"mac": mac}) for nic, mac in zip(spec.nics, macs, strict=True)]
    changes["nics"] = [n.model_dump() for n in nics]
    if os_report is not None:
        plan.append({"kind": "os", **os_report})  # nothing to make: reported in the result
    try:
        return spec.updated(**changes), plan
    except BaseException:
        from kvmkit.service.vms.macs import release

        release(conn, macs)
        raise


def create_vm(conn: libvirt.virConnect, spec: VMSpec | dict[str, Any], *, start: bool = False,
              progress: Progress | None = None, print_xml: bool = False) -> dict[str, Any]:
    """Create (define) a VM, its new disks, and optionally start it. Rolls everything back on failure.

    With ``print_xml`` nothing is created: the result holds the XML that would be defined."""
    say = progress or (lambda _msg: None)
    if not isinstance(spec, VMSpec):
        spec = parse_spec(spec)
    final, plan = resolve(conn, spec, say)
    try:
        if print_xml:
            os_step = next(({k: p[k] for k in ("os", "warnings", "notes")} for p in plan if p["kind"] == "os"), {})
            return {"name": final.name, "defined": False, "xml": domain_xml(conn, _preview(final, plan)), **os_step}
        return _make(conn, spec, final, plan, start, say)
    finally:
        from kvmkit.service.vms.macs import release

        release(conn, [n.mac for n in final.nics if n.mac])  # defined (a new pass sees them) or undone


def domain_xml(conn: libvirt.virConnect, spec: VMSpec) -> str:
    """The domain XML for ``spec``; read-only media the QEMU user can read as they are (ISOs shared by many
    VMs) carry ``<seclabel model='dac' relabel='no'/>`` so that libvirt leaves their owner alone.

    Kernels and initrds cannot be marked so: libvirt (9.0) has no per-file label for <kernel>/<initrd>; it
    counts them in its remember-owner records like every read-write disk and gives them back when the
    last VM using them stops."""
    from kvmkit.service.vms.storage_use import keep_owner_of_shared_media
    from kvmkit.xml.domain import spec_to_xml
    from kvmkit.xml.util import parse

    xml = spec_to_xml(spec)
    root = parse(xml)
    changed = bool(keep_owner_of_shared_media(conn, root))
    if spec.os:
        from kvmkit.service.osinfo.presets import apply_to_xml

        changed = apply_to_xml(root, spec) or changed  # TPM, Secure Boot, Windows' clock: not in the spec
    if changed:
        etree.indent(root, space="  ")
        xml = etree.tostring(root, encoding="unicode")
    return xml


def _make(conn: libvirt.virConnect, spec: VMSpec, final: VMSpec, plan: list[dict[str, Any]], start: bool,
          say: Progress) -> dict[str, Any]:
    """Take the planned steps, define, optionally start; undo every step taken when one fails."""
    undo: list[Callable[[], None]] = []
    try:
        if spec.serial and _is_local(conn):
            os.makedirs(os.path.dirname(final.default_serial_log()), exist_ok=True)
        disks = list(final.disks)
        for step in plan:
            if step["kind"] == "os":
                continue
            if step["kind"] == "template":
                from kvmkit.service.storage.templates import provision_from_template

                say(f"provisioning {step['volume']} from template {step['template']}")
                path = provision_from_template(conn, step["template"], step["volume"], pool=step["pool"],
                                               linked=step["linked"])
                undo.append(functools.partial(_delete_volume, conn, path))
                fmt = "qcow2" if step["linked"] else _detect_format(path)
                disks[0] = disks[0].model_copy(update={"path": path, "format": fmt})
            elif step["kind"] == "cidata":
                say(f"writing the cloud-init seed {step['volume']} in pool {step['pool']}")
                path = _create_cidata(conn, step)
                undo.append(functools.partial(_delete_volume, conn, path))
            else:
                say(f"creating volume {step['volume']} ({step['size'] // 1024**2} MiB) in pool {step['pool']}")
                path = _create_volume(conn, step)
                undo.append(functools.partial(_delete_volume, conn, path))
        final = final.updated(disks=[d.model_dump() for d in disks])
        xml = domain_xml(conn, final)
        say(f"defining VM {final.name}")
        with libvirt_errors(f"defining VM {final.name}"):
            dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)  # libvirt's schema check too
        undo.append(functools.partial(_undefine, dom))
        if final.autostart:
            with libvirt_errors(f"setting autostart on {final.name}"):
                dom.setAutostart(1)
        if start:
            _check_hugepages(conn, dom, xml)
            say(f"starting VM {final.name}")
            with libvirt_errors(f"starting VM {final.name}"):
                dom.create()
            undo.append(functools.partial(_destroy, dom))
    except BaseException as err:
        for undo_step in reversed(undo):
            with contextlib.suppress(Exception):
                undo_step()
        if isinstance(err, KvmkitError | KeyboardInterrupt | SystemExit):
            raise
        if isinstance(err, libvirt.libvirtError):
            raise OperationFailed(f"creating VM {spec.name}: {err.get_error_message()}") from err
        raise
    os_step = next((p for p in plan if p["kind"] == "os"), None)
    return {
        **({"os": os_step["os"], "warnings": os_step["warnings"], "notes": os_step["notes"]} if os_step else {}),
        "name": final.name, "uuid": dom.UUIDString(), "defined": True, "started": start,
        "state": "running" if start else "shut-off", "virt_type": final.virt_type,
        "virt_type_reason": final.metadata.get("virt_type_reason"),
        "disks": [d.path for d in final.disks if d.path],
        "volumes_created": [p["volume"] for p in plan if p["kind"] != "os"],
        "macs": [n.mac for n in final.nics], "serial_log": final.serial_log, "autostart": final.autostart,
    }


def _plan_cidata(conn: libvirt.virConnect, spec: VMSpec) -> dict[str, Any]:
    """Render the NoCloud seed's files now (bad input fails before anything exists); written at create."""
    from kvmkit.images.cloud_init import render

    assert spec.cloud_init is not None
    pool = _pool(conn, "default")
    vol = f"{spec.name}-cidata.img"
    if _exists_by(pool.storageVolLookupByName, vol) is not None:
        raise Conflict(f"volume '{vol}' already exists in pool '{pool.name()}'",
                       hint="delete it (kvmkit volume delete) or choose another VM name")
    return {"kind": "cidata", "pool": pool.name(), "volume": vol, "path": os.path.join(_pool_dir(pool), vol),
            "files": render(spec.cloud_init, spec.name)}


def _create_cidata(conn: libvirt.virConnect, step: dict[str, Any]) -> str:
    import tempfile

    from kvmkit.images.cloud_init import write_seed
    from kvmkit.service.storage.streams import upload

    with tempfile.TemporaryDirectory(prefix="kvmkit-cidata-") as tmp:
        seed = write_seed(step["files"], os.path.join(tmp, step["volume"]))
        info = upload(conn, step["pool"], step["volume"], seed, fmt="raw")  # deletes the volume if it fails
    return str(info.get("path") or step["path"])


def _preview(spec: VMSpec, plan: list[dict[str, Any]]) -> VMSpec:
    if not spec.template:
        return spec
    disks = list(spec.disks)  # the template's volume path is only known once it is provisioned
    disks[0] = disks[0].model_copy(update={"path": f"/(template {spec.template})/{plan[0]['volume']}"})
    return spec.updated(disks=[d.model_dump() for d in disks])


def _create_volume(conn: libvirt.virConnect, step: dict[str, Any]) -> str:
    vol = etree.Element("volume")
    etree.SubElement(vol, "name").text = step["volume"]
    etree.SubElement(vol, "capacity", unit="bytes").text = str(step["size"])
    if step["format"] == "qcow2":
        etree.SubElement(vol, "allocation", unit="bytes").text = "0"
    target = etree.SubElement(vol, "target")
    etree.SubElement(target, "format", type=step["format"])
    pool = _pool(conn, step["pool"])
    with libvirt_errors(f"creating volume {step['volume']} in pool {step['pool']}"):
        created = pool.createXML(etree.tostring(vol, encoding="unicode"), 0)
        return str(created.path())


def _delete_volume(conn: libvirt.virConnect, path: str) -> None:
    vol = conn.storageVolLookupByPath(path)
    vol.delete(0)


def _undefine(dom: libvirt.virDomain) -> None:
    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)


def _destroy(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()


def _hugetlbfs_mounted() -> bool:
    try:
        with open("/proc/mounts") as mounts:
            return any(line.split()[2] == "hugetlbfs" for line in mounts if len(line.split()) > 2)
    except OSError:
        return False


def _check_hugepages(conn: libvirt.virConnect, dom: libvirt.virDomain, xml: str) -> None:
    """Refuse to start a VM backed by huge pages when too few are free (read from the XML just defined:
    no round trip for the usual VM without huge pages)."""
    if etree.fromstring(xml.encode()).find("memoryBacking/hugepages") is None:
        return  # the usual VM: not even the import
    try:
        from kvmkit.host.hugepages import check_domain_can_start, domain_requirement
    except ImportError:
        return
    if domain_requirement(xml) is not None:
        check_domain_can_start(conn, dom)
