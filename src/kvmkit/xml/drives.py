"""Drive addresses (controller, bus, target, unit) for new disks on SCSI, SATA and IDE buses.

libvirt derives a disk's drive address from its target name when the disk has none (sdc -> unit 2),
and refuses two devices at one address. A disk added next to one placed elsewhere by hand, or next
to a SCSI host device, would collide; so a new disk on these buses gets an explicit free address,
avoiding every explicit address and the derived address of every disk without one (both of libvirt's
SCSI layouts: narrow, 7 units per controller, and wide, 15 units skipping unit 7).
"""

from __future__ import annotations

from lxml import etree

Address = tuple[int, int, int, int]
# controller type -> (buses per controller, units per bus) a new disk may use
_SLOTS = {"scsi": (1, 7), "sata": (1, 6), "ide": (2, 2)}


def name_index(dev: str) -> int | None:
    """libvirt's index of a target name: sda -> 0, sdz -> 25, sdaa -> 26 (None if not a name)."""
    letters = dev[2:] if dev[:2] in ("sd", "hd", "vd", "xv") else ""
    if not letters.isalpha() or not letters.islower():
        return None
    idx = 0
    for ch in letters:
        idx = idx * 26 + (ord(ch) - 96)
    return idx - 1


def derived(bus: str, idx: int) -> list[Address]:
    """The addresses libvirt may give a disk with target index ``idx`` and no <address>."""
    if bus == "scsi":
        wide = idx % 15
        return [(idx // 7, 0, 0, idx % 7), (idx // 15, 0, 0, wide + 1 if wide >= 7 else wide)]
    if bus == "sata":
        return [(idx // 6, 0, 0, idx % 6)]
    return [(idx // 4, (idx % 4) // 2, 0, idx % 2)]


def _explicit(el: etree._Element) -> Address | None:
    addr = el.find("address[@type='drive']")
    if addr is None:
        return None
    try:
        return tuple(int(addr.get(k, "0")) for k in ("controller", "bus", "target", "unit"))  # type: ignore[return-value]
    except ValueError:
        return None


def taken(devices: etree._Element, bus: str, exclude: etree._Element | None = None) -> set[Address]:
    used: set[Address] = set()
    for disk in devices.iterfind("disk"):
        target = disk.find("target")
        if disk is exclude or target is None or target.get("bus") != bus:
            continue
        explicit = _explicit(disk)
        idx = name_index(target.get("dev", ""))
        if explicit is not None:
            used.add(explicit)
        elif idx is not None:
            used.update(derived(bus, idx))
    if bus == "scsi":
        used.update(a for h in devices.iterfind("hostdev[@type='scsi']") if (a := _explicit(h)) is not None)
    return used


def free_address(devices: etree._Element, bus: str, exclude: etree._Element | None = None) -> etree._Element | None:
    """An <address type='drive'> no device on ``bus`` (but ``exclude``) has or would get; None for other buses."""
    if bus not in _SLOTS:
        return None
    used = taken(devices, bus, exclude)
    buses, units = _SLOTS[bus]
    indices = sorted({int(c.get("index", "0")) for c in devices.iterfind(f"controller[@type='{bus}']")} | {0})
    for controller in [*indices, indices[-1] + 1]:
        for b in range(buses):
            for unit in range(units):
                if (controller, b, 0, unit) not in used:
                    return etree.Element("address", type="drive", controller=str(controller), bus=str(b),
                                         target="0", unit=str(unit))
    return None
