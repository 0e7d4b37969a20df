"""What a non-admin may put into a VM: the one place every VM-changing route asks.

Operators act on VMs, but a VM definition can reach far beyond its VM: a disk path opens any host file
or device to the guest (as root's QEMU would see it), a kernel/initrd/cloud-init path reads host files
into the guest, a serial log path has libvirt overwrite a host file, a ``direct`` NIC puts the guest on
a host interface, a host bridge on whatever LAN it joins, a VNC/SPICE server on a public address without
a password gives the guest's screen to the network, a volume another VM writes gets a second writer
(qcow2 corruption) and an adopted pool volume is deleted by the next ``DELETE ...?storage=true``. Those
are the admin's to decide: for anyone below admin each answers 403 naming the field (``Forbidden``).

Interface (call after the role check and before any filesystem or libvirt lookup of user input; ``p``
is the caller's :class:`~kvmkit.service.access.auth.Principal`, ``field`` the name to report):

- :func:`check_vm_spec(p, spec, conn)` -- a whole VMSpec (create, and any route that takes one);
- :func:`check_disk(p, disk, field, conn, vm=None)` -- a DiskSpec being attached (``vm``: the VM it joins,
  whose own disks it may use again);
- :func:`check_nic(p, nic, field)`, :func:`check_graphics(p, graphics, field)`;
- :func:`check_host_path(p, field)` -- any other field that names a host path (backup targets, images,
  kernels of an edit, XML replacement...): admins only;
- :func:`check_storage_delete(p, ...)` is not needed: ``storage=true`` deletes only volumes the VM's own
  disks use, and no non-admin can attach a volume it did not get from kvmkit (the checks above).

Admins pass every check. The checks never look at the filesystem; ``check_disk`` asks libvirt only for
volumes named in pools, after the role is known.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kvmkit.service.access.auth import Forbidden, Principal

ADMIN_HINT = "ask an admin, or use what kvmkit provides (pool volumes it creates, libvirt networks, templates)"


def _refuse(p: Principal, field: str, what: str, hint: str = ADMIN_HINT) -> Forbidden:
    return Forbidden(f"user '{p.name}' (role {p.role}) may not {what} ({field})", hint=hint)


def is_admin(p: Principal) -> bool:
    return p.at_least("admin")


def check_host_path(p: Principal, field: str) -> None:
    if not is_admin(p):
        raise _refuse(p, field, "use host paths",
                      "use pool volumes (disks: size=, or a template), or ask an admin")


# cloud-init's host-file fields -> what a non-admin sends instead (the content itself, in the request)
CLOUD_INIT_INLINE = {"user_data": "user_data_text (the user-data document itself)",
                     "ssh_key": "ssh_authorized_keys (the public key lines)",
                     "password_file": "password (hashed at once, never stored)",
                     "meta_data": "hostname (kvmkit writes the meta-data)"}


def host_path_fields(spec: Any) -> list[str]:
    """The fields of a VMSpec that name files or devices on the host."""
    fields = [f"disks[{i}].path" for i, d in enumerate(spec.disks) if d.path]
    fields += [f for f in ("kernel", "initrd", "serial_log", "virtio_win") if getattr(spec, f, None)]
    return fields + cloud_init_file_fields(spec)


def cloud_init_file_fields(spec: Any) -> list[str]:
    """The cloud-init fields of a VMSpec that name host files (each has an inline alternative)."""
    ci = getattr(spec, "cloud_init", None)
    return [] if ci is None else [f"cloud_init.{f}" for f in CLOUD_INIT_INLINE if getattr(ci, f, None)]


def check_cloud_init(p: Principal, spec: Any) -> None:
    """Inline cloud-init (hostname, user_data_text, ssh_authorized_keys, password, password_hash, eject) is
    for every operator; its host-file fields are the admin's: 403 naming the field and its inline twin."""
    fields = cloud_init_file_fields(spec)
    if fields and not is_admin(p):
        instead = "; ".join(f"{f} -> cloud_init.{CLOUD_INIT_INLINE[f.split('.', 1)[1]]}" for f in fields)
        raise _refuse(p, ", ".join(fields), "use host paths for cloud-init (files read into the seed)",
                      f"send the content in the request instead: {instead}")


def check_nic(p: Principal, nic: Any, field: str) -> None:
    if is_admin(p):
        return
    if nic.type == "direct":
        raise _refuse(p, f"{field}.type", f"attach a NIC straight to host interface '{nic.source}' (type=direct)",
                      "use a libvirt network (type=network), or ask an admin")
    if nic.type == "bridge":
        raise _refuse(p, f"{field}.type", f"attach a NIC to host bridge '{nic.source}'",
                      "use a libvirt network (type=network); an admin may define one for that bridge")


def _loopback(listen: str) -> bool:
    try:
        return ipaddress.ip_address(listen).is_loopback
    except ValueError:
        return False


def check_graphics(p: Principal, graphics: Any, field: str = "graphics") -> None:
    if graphics is None or is_admin(p):
        return
    if not _loopback(graphics.listen) and not graphics.password:
        raise _refuse(p, f"{field}.listen", f"serve {graphics.type.upper()} on {graphics.listen} without a password",
                      "listen on 127.0.0.1 (the portal's console reaches it), or set a password")


def _volume_users(conn: Any, path: str, vm: str | None) -> list[str]:
    """Names of the domains (other than ``vm``) that have ``path`` as a disk or in a disk's backing chain."""
    import libvirt

    from kvmkit.service.vms.storage_use import _all_xmls, disk_source, real_path

    want = real_path(path)
    users = []
    for dom in conn.listAllDomains():
        try:
            if dom.name() == vm:
                continue
            for root in _all_xmls(dom):
                paths = [disk_source(conn, d) for d in root.iterfind("./devices/disk")]
                paths += [b.get("file") or b.get("dev") for b in root.iterfind("./devices/disk//backingStore/source")]
                if any(x and real_path(x) == want for x in paths):
                    users.append(dom.name())
                    break
        except libvirt.libvirtError:
            continue
    return users


def check_disk(p: Principal, disk: Any, field: str, conn: Any, vm: str | None = None) -> None:
    """A disk or CD-ROM of a VM (``vm``: the VM it is for, when it exists already)."""
    if is_admin(p):
        return
    if disk.path:
        check_host_path(p, f"{field}.path")
    if disk.volume is None:
        return  # a new volume kvmkit creates (size=), or nothing
    if disk.device != "cdrom":
        raise _refuse(p, f"{field}.volume", f"attach the existing volume '{disk.pool}/{disk.volume}' as a disk",
                      "give the disk a size (kvmkit creates its volume) or use a template; an admin may "
                      "attach existing volumes")
    import libvirt

    try:  # a CD-ROM of a pool volume (an ISO): read-only, but not another VM's disk
        path = conn.storagePoolLookupByName(disk.pool or "default").storageVolLookupByName(disk.volume).path()
    except libvirt.libvirtError:
        return  # the create itself reports the missing volume
    if _volume_users(conn, path, vm):
        raise _refuse(p, f"{field}.volume", f"attach volume '{disk.pool}/{disk.volume}', which another VM uses",
                      "use an ISO volume that no VM has as a disk, or ask an admin")


def check_vm_spec(p: Principal, spec: Any, conn: Any, vm: str | None = None) -> None:
    """Every policy check of a VMSpec, in field order; the first refusal is raised."""
    if is_admin(p):
        return
    paths = [f for f in host_path_fields(spec) if not f.startswith("cloud_init.")]
    if paths:
        raise _refuse(p, ", ".join(paths), "use host paths",
                      "use pool volumes (disks: size=, or a template), the micro-guest, or ask an admin")
    for i, nic in enumerate(spec.nics):
        check_nic(p, nic, f"nics[{i}]")
    check_graphics(p, spec.graphics)
    check_cloud_init(p, spec)
    for i, disk in enumerate(spec.disks):
        check_disk(p, disk, f"disks[{i}]", conn, vm)
