"""What kvmkit makes of the device ids an osinfo entry lists (``<devices><device id=.../>``).

osinfo names devices by their PCI ids (``http://pcisig.com/pci/1af4/1001`` is virtio-block) and describes
each one under ``device/`` (name, class). kvmkit needs only a few of them to choose a VM's shape: the disk
bus, the NIC model, the machine type, whether a virtio RNG and a TPM are worth adding.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmkit.service.osinfo.db import Database, OsEntry

PCI = "http://pcisig.com/pci/"
VIRTIO_BLOCK = (PCI + "1af4/1001", PCI + "1af4/1042")   # virtio-block, virtio1.0-block
VIRTIO_SCSI = (PCI + "1af4/1004", PCI + "1af4/1048")
VIRTIO_NET = (PCI + "1af4/1000", PCI + "1af4/1041")
VIRTIO_RNG = (PCI + "1af4/1005", PCI + "1af4/1044")
E1000E = PCI + "8086/10d3"
RTL8139 = PCI + "10ec/8139"
Q35 = "http://qemu.org/chipset/x86/q35"
# kvmkit's overlay describes this device (overlay/device/trustedcomputinggroup.org/tpm-2.0.xml): osinfo-db
# 2022-11-30 has no way to say that an OS supports or needs a TPM.
TPM2 = "http://trustedcomputinggroup.org/tpm/2.0"


@dataclass(frozen=True)
class Support:
    """The device choices an OS entry supports (inherited entries included)."""

    virtio_block: bool
    virtio_scsi: bool
    virtio_net: bool
    virtio_rng: bool
    e1000e: bool
    rtl8139: bool
    q35: bool
    tpm2: bool
    ids: frozenset[str]

    @property
    def virtio(self) -> bool:
        return self.virtio_block and self.virtio_net


def support(db: Database, entry: OsEntry) -> Support:
    ids = frozenset(db.all_devices(entry))
    return Support(
        virtio_block=any(d in ids for d in VIRTIO_BLOCK), virtio_scsi=any(d in ids for d in VIRTIO_SCSI),
        virtio_net=any(d in ids for d in VIRTIO_NET), virtio_rng=any(d in ids for d in VIRTIO_RNG),
        e1000e=E1000E in ids, rtl8139=RTL8139 in ids, q35=Q35 in ids, tpm2=TPM2 in ids, ids=ids)


def names(db: Database, ids: frozenset[str] | set[str]) -> list[dict[str, str | None]]:
    """Device ids with the names and classes the database gives them, sorted by class and name."""
    rows = []
    for dev_id in ids:
        dev = db.devices.get(dev_id)
        rows.append({"id": dev_id, "name": dev.name if dev else None, "class": dev.device_class if dev else None})
    return sorted(rows, key=lambda r: (r["class"] or "~", r["name"] or r["id"] or ""))
