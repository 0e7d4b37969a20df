"""OS presets: the VM shape an osinfo entry recommends, applied to a VMSpec by ``vm create --os``.

From the entry (and the entries it derives from): the disk bus (virtio when the OS has virtio-block, else
SATA), the NIC model (virtio, else e1000e, else rtl8139), the machine type (q35 when the OS supports it),
the firmware (UEFI when the OS does not boot with BIOS), Secure Boot and a TPM 2.0 (when the entry asks
for them: kvmkit's overlay does for Windows 11), whether a virtio RNG is worth adding, and the minimum and
recommended memory, vCPUs and disk size. Values the caller gave win (``--disk ...,bus=sata``,
``--memory 2G``); a value below the OS's minimum or recommendation is kept with a warning.

Windows without virtio drivers gets SATA and e1000e (Windows has drivers for those); ``--virtio-win ISO``
attaches the virtio-win drivers as a second CD-ROM and then uses virtio (Windows setup loads the disk
driver from that CD: "Load driver"). Windows also gets graphics (its installer has no serial console) and
its RTC in local time. The spec keeps the osinfo id (``os``), written into the domain's libosinfo metadata.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kvmkit.errors import InvalidInput
from kvmkit.service.osinfo import devices
from kvmkit.service.osinfo.db import Database, OsEntry, load
from kvmkit.service.osinfo.lookup import find, is_windows, summary

if TYPE_CHECKING:
    from lxml import etree

    from kvmkit.spec.vm import VMSpec

MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class Shape:
    """What an OS asks of a VM."""

    windows: bool
    virtio: bool                 # the guest has virtio block and net drivers (its own or from virtio-win)
    disk_bus: str
    nic_model: str
    machine: str | None          # q35, or None for libvirt's default (pc)
    uefi_required: bool          # osinfo: BIOS not supported
    uefi_supported: bool
    secure_boot: bool
    tpm: bool
    rng: bool
    graphics: bool               # the OS needs a display (its installer has no serial console)
    memory_mib: int | None       # what a VM gets when the caller says nothing: recommended, else minimum
    min_memory_mib: int | None
    recommended_memory_mib: int | None
    vcpus: int | None
    min_vcpus: int | None
    recommended_vcpus: int | None
    min_disk_bytes: int | None
    recommended_disk_bytes: int | None


def shape_of(db: Database, entry: OsEntry, *, virtio_win: bool = False) -> Shape:
    sup = devices.support(db, entry)
    windows = is_windows(entry)
    virtio = sup.virtio or (windows and virtio_win)
    firmware = db.firmware(entry)
    bios = next((f for f in firmware if f.type == "bios"), None)
    efi = next((f for f in firmware if f.type == "efi"), None)
    res = db.resources(entry)
    mins, recs = res.get("minimum", {}), res.get("recommended", {})

    def mib(values: dict[str, int]) -> int | None:
        return values["ram"] // MIB if "ram" in values else None

    return Shape(
        windows=windows, virtio=virtio,
        disk_bus="virtio" if sup.virtio_block or virtio else "sata",
        nic_model="virtio" if sup.virtio_net or virtio else "e1000e" if sup.e1000e or not sup.rtl8139 else "rtl8139",
        machine="q35" if sup.q35 else None,
        uefi_required=bios is not None and not bios.supported and efi is not None and efi.supported,
        uefi_supported=efi is not None and efi.supported,
        secure_boot=efi is not None and any(name == "secure-boot" and req for name, req in efi.features),
        tpm=sup.tpm2, rng=sup.virtio_rng or virtio, graphics=windows,
        memory_mib=mib(recs) or mib(mins), min_memory_mib=mib(mins), recommended_memory_mib=mib(recs),
        vcpus=recs.get("n_cpus") or mins.get("n_cpus"), min_vcpus=mins.get("n_cpus"),
        recommended_vcpus=recs.get("n_cpus"),
        min_disk_bytes=mins.get("storage"), recommended_disk_bytes=recs.get("storage"),
    )


def preset_of(db: Database, entry: OsEntry, *, virtio_win: bool = False) -> dict[str, Any]:
    return asdict(shape_of(db, entry, virtio_win=virtio_win))


@dataclass
class Applied:
    spec: VMSpec
    os: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {"os": self.os, "warnings": self.warnings, "notes": self.notes}


def apply_preset(spec: VMSpec) -> Applied:
    """``spec`` with its OS preset applied (``os`` becomes the osinfo id, ``virtio_win`` a CD-ROM)."""
    from kvmkit.spec.vm import DiskSpec

    if spec.os is None:
        if not spec.virtio_win:
            return Applied(spec)
        disks = [*spec.disks, DiskSpec(device="cdrom", path=spec.virtio_win)]
        return Applied(spec.updated(disks=[d.model_dump() for d in disks], virtio_win=None),
                       notes=[f"virtio-win drivers ISO {spec.virtio_win} attached as a CD-ROM"])
    db = load()
    match = find(spec.os, db)
    entry = match.entry
    out = Applied(spec, os=summary(entry, db))
    if match.message:
        (out.warnings if match.fallback else out.notes).append(match.message)
    shape = shape_of(db, entry, virtio_win=bool(spec.virtio_win))
    explicit = spec.model_fields_set
    changes: dict[str, Any] = {"os": entry.id, "virtio_win": None}
    label = entry.short_id

    if spec.machine is None and shape.machine:
        changes["machine"] = shape.machine
    firmware = spec.firmware
    if shape.uefi_required:
        if "firmware" in explicit and spec.firmware == "bios":
            raise InvalidInput(f"{entry.name} does not boot with BIOS firmware (osinfo: BIOS not supported)",
                               hint="drop --firmware bios (kvmkit then uses UEFI)")
        firmware = changes["firmware"] = "uefi"
    elif spec.firmware == "uefi" and not shape.uefi_supported and db.firmware(entry):
        out.warnings.append(f"osinfo does not list UEFI firmware for {label}; it may not boot with --firmware uefi")
    if firmware == "uefi" and shape.secure_boot:
        out.notes.append(f"{label} needs UEFI Secure Boot: OVMF with Microsoft's keys enrolled, and SMM")
    if shape.tpm:
        out.notes.append(f"{label} gets a TPM 2.0 (tpm-crb, emulated by swtpm)")

    chose_bus = any(d.device == "disk" and "bus" not in d.model_fields_set for d in spec.disks)
    chose_model = any("model" not in n.model_fields_set for n in spec.nics)
    disks = [d.model_copy(update={"bus": shape.disk_bus}) if d.device == "disk" and "bus" not in d.model_fields_set
             else d for d in spec.disks]
    nics = [n.model_copy(update={"model": shape.nic_model}) if "model" not in n.model_fields_set else n
            for n in spec.nics]
    if spec.virtio_win:
        disks.append(DiskSpec(device="cdrom", path=spec.virtio_win))
        if shape.windows:
            out.notes.append(f"virtio-win ISO {spec.virtio_win} is the second CD-ROM: in Windows setup choose "
                             "'Load driver' and pick viostor from it to see the virtio disk; install "
                             "virtio-win-guest-tools from it after setup for the NIC, balloon and agent")
        else:
            out.warnings.append(f"the virtio-win ISO holds Windows drivers; {label} is not Windows (attached anyway)")
    changes["disks"] = [d.model_dump() for d in disks]
    changes["nics"] = [n.model_dump() for n in nics]
    why = ("the guest has virtio drivers" if shape.virtio else
           f"{label} has no virtio drivers of its own (give --virtio-win ISO to install them)")
    chosen = [f"disk bus {shape.disk_bus}"] * chose_bus + [f"NIC model {shape.nic_model}"] * chose_model
    if chosen:  # what the preset chose (devices the caller gave are the caller's)
        out.notes.append(f"{', '.join(chosen)}: {why}")
        if not shape.virtio:
            out.notes.append(switch_hint(spec.name))
    if not shape.rng and "rng" not in explicit:
        changes["rng"] = False
    if shape.graphics and spec.graphics is None and "graphics" not in explicit:
        changes["graphics"] = {"type": "vnc"}
        out.notes.append(f"{label} needs a display: VNC on 127.0.0.1 (kvmkit vm show {spec.name} gives the port)")
    _sizes(spec, shape, label, explicit, changes, out)
    out.spec = spec.updated(**changes)
    return out


def switch_hint(name: str) -> str:
    return (f"to switch to virtio later: install the virtio drivers in the guest, shut it down, then "
            f"`kvmkit vm disk detach {name} TARGET --config` and `kvmkit vm disk attach {name} --volume V --pool P "
            f"--format qcow2 --bus virtio --config`; `kvmkit vm nic detach {name} MAC --config` and "
            f"`kvmkit vm nic attach {name} --network default --model virtio --mac MAC --config`")


def _sizes(spec: VMSpec, shape: Shape, label: str, explicit: set[str], changes: dict[str, Any],
           out: Applied) -> None:
    memory = spec.memory_mib
    if "memory_mib" not in explicit and shape.memory_mib:
        memory = shape.memory_mib
        if spec.max_memory_mib == spec.memory_mib:
            changes["max_memory_mib"] = memory
        elif spec.max_memory_mib is not None:
            memory = min(memory, spec.max_memory_mib)
        changes["memory_mib"] = memory
    _below(out, "memory", memory, shape.min_memory_mib, shape.recommended_memory_mib, label, "MiB", "--memory")
    vcpus = spec.vcpus
    if "vcpus" not in explicit and shape.vcpus and spec.sockets is None:
        vcpus = shape.vcpus
        if spec.max_vcpus == spec.vcpus:
            changes["max_vcpus"] = vcpus
        elif spec.max_vcpus is not None:
            vcpus = min(vcpus, spec.max_vcpus)
        changes["vcpus"] = vcpus
    _below(out, "vCPUs", vcpus, shape.min_vcpus, shape.recommended_vcpus, label, "", "--vcpus")
    first = next((d for d in spec.disks if d.device == "disk"), None)
    need = shape.recommended_disk_bytes or shape.min_disk_bytes
    if first is None and spec.template is None and need:
        out.warnings.append(f"no disk: {label} needs {_gib(shape.min_disk_bytes or need)} or more "
                            f"(recommended {_gib(need)}); add --disk size={_gib(need, unit='G')}")
    elif first is not None and first.size is not None:
        _below(out, "disk", first.size // GIB, (shape.min_disk_bytes or 0) // GIB or None,
               (shape.recommended_disk_bytes or 0) // GIB or None, label, "GiB", "--disk size=")


def _below(out: Applied, what: str, value: int, minimum: int | None, recommended: int | None, label: str,
           unit: str, flag: str) -> None:
    u = f" {unit}" if unit else ""
    if minimum and value < minimum:
        out.warnings.append(f"{what} {value}{u} is below the minimum for {label} ({minimum}{u}); "
                            f"the installer or the guest may fail: raise it ({flag})")
    elif recommended and value < recommended:
        out.warnings.append(f"{what} {value}{u} is below the recommended for {label} ({recommended}{u})")


def _gib(n: int | None, unit: str = " GiB") -> str:
    return f"{-(-(n or 0) // GIB)}{unit}"


# -- the domain XML: what the spec does not model -------------------------------------------------------

def apply_to_xml(root: etree._Element, spec: VMSpec) -> bool:
    """Add what ``spec.os`` needs beyond the spec to a new domain's XML: Secure Boot (with UEFI), a TPM 2.0,
    Windows' local-time clock. True when something was added."""
    from kvmkit.xml import misc_devices, osboot

    if not spec.os:
        return False
    db = load()
    entry = db.get(spec.os)
    if entry is None:
        return False
    shape = shape_of(db, entry)
    changed = False
    if spec.firmware == "uefi" and shape.secure_boot:
        osboot.set_secure_boot(root)
        changed = True
    if shape.tpm:
        misc_devices.add_tpm(root)
        changed = True
    if shape.windows:
        osboot.set_windows_time(root, hyperv=spec.virt_type == "kvm")
        changed = True
    return changed


def describe_vm(os_id: str | None, root: etree._Element) -> dict[str, Any]:
    """What ``vm show`` says about a VM's OS, TPM and Secure Boot."""
    from kvmkit.xml import misc_devices, osboot

    info: dict[str, Any] | None = None
    if os_id:
        db = load()
        entry = db.get(os_id)
        info = summary(entry, db) if entry else {"id": os_id, "short_id": None, "name": None, "source": None}
    return {"os": info, "tpm": misc_devices.tpm(root), "secure_boot": osboot.secure_boot(root)}
