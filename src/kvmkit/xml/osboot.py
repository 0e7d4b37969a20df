"""<os>: machine type, firmware (BIOS or UEFI via firmware='efi'), boot order, direct kernel boot; and the secure-boot,
SMM and Windows clock settings a guest OS may need (written by service/osinfo, not modelled by the spec).

Switching firmware drops what belonged to the old one (a manual <loader>, <nvram>), since libvirt's
firmware autoselection refuses a loader type beside firmware='efi'. A boot order set here replaces
per-device <boot order='N'/> (libvirt refuses both kinds together). An <initrd> or <cmdline> without
a <kernel> (libvirt ignores them) reads as none.

<kernel> and <initrd> take no per-file <seclabel> (libvirt 9.0): libvirt's DAC driver always gives them
to the QEMU user and counts them in its remember-owner records, like a read-write disk. Only a
domain-wide static label with relabel='no' would stop that, and it stops the relabelling of every disk
too, so kvmkit leaves it on (see kvmkit.host.seclabels for what a stale record does and `host repair`)."""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.xml.util import ensure, new_child, remove, set_text_child

FIELDS = ("machine", "firmware", "boot", "kernel", "initrd", "cmdline")


def read(root: etree._Element) -> dict[str, Any]:
    os_el = root.find("os")
    if os_el is None:
        return {"machine": None, "firmware": "bios", "boot": [], "kernel": None, "initrd": None, "cmdline": None}
    typ = os_el.find("type")
    loader = os_el.find("loader")
    uefi = os_el.get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash")
    kernel = _text(os_el, "kernel")
    return {
        "machine": typ.get("machine") if typ is not None else None,
        "firmware": "uefi" if uefi else "bios",
        "boot": [b.get("dev") for b in os_el.findall("boot") if b.get("dev") in ("hd", "cdrom", "network", "fd")],
        "kernel": kernel,
        "initrd": _text(os_el, "initrd") if kernel else None,
        "cmdline": _text(os_el, "cmdline") if kernel else None,
    }


def _text(os_el: etree._Element, tag: str) -> str | None:
    el = os_el.find(tag)
    return el.text if el is not None and el.text else None


def write(root: etree._Element, spec: Any) -> None:
    old = read(root)
    os_el = ensure(root, "os")
    typ = ensure(os_el, "type")
    if typ.text is None:
        typ.text = "hvm"
    if typ.get("arch") is None:
        typ.set("arch", "x86_64")
    if old["machine"] != spec.machine:
        if spec.machine:
            typ.set("machine", spec.machine)
        else:
            typ.attrib.pop("machine", None)
    if old["firmware"] != spec.firmware:
        for tag in ("loader", "nvram", "firmware"):
            remove(os_el.find(tag))
        if spec.firmware == "uefi":
            os_el.set("firmware", "efi")
            _no_secure_boot(os_el)
        else:
            os_el.attrib.pop("firmware", None)
    if old["boot"] != spec.boot:
        for b in os_el.findall("boot"):
            remove(b)
        if spec.boot:
            for b in root.findall("devices/*/boot"):
                remove(b)
        for dev in spec.boot:
            new_child(os_el, "boot", dev=dev)
    for tag in ("kernel", "initrd", "cmdline"):  # with a kernel, an orphan initrd/cmdline counts again
        have = _text(os_el, tag) if spec.kernel else old[tag]
        if have != getattr(spec, tag):
            set_text_child(os_el, tag, getattr(spec, tag))


def _no_secure_boot(os_el: etree._Element) -> None:
    """Plain UEFI means no Secure Boot, said explicitly: left to libvirt's firmware auto-selection, a bare
    firmware='efi' gets the first OVMF descriptor that fits, which on Debian and Fedora is Secure Boot with
    Microsoft's keys enrolled (40-edk2-x86_64-secure-enrolled.json), so an unsigned boot loader (a GRUB
    without shim, as many imported guests have) is refused ("Access Denied") while `vm show` would say
    secure_boot false. set_secure_boot() turns it on for the OSes that need it."""
    firmware = etree.SubElement(os_el, "firmware")
    etree.SubElement(firmware, "feature", enabled="no", name="secure-boot")


def nvram_path(root: etree._Element) -> str | None:
    """The NVRAM (UEFI variables) file: ``<nvram>PATH</nvram>`` or ``<nvram type='file'><source file=/>``."""
    nvram = root.find("os/nvram")
    if nvram is None:
        return None
    if nvram.get("type") in (None, "file"):
        source = nvram.find("source")
        path = source.get("file") if source is not None else (nvram.text or "").strip()
        return path or None
    return None


def set_nvram_path(root: etree._Element, path: str) -> None:
    """Point the existing <nvram> at ``path``, in the form it already has."""
    nvram = root.find("os/nvram")
    source = nvram.find("source") if nvram is not None else None
    if source is not None:
        source.set("file", path)
    elif nvram is not None:
        nvram.text = path


# -- what a guest OS needs beyond the spec (service/osinfo decides, these write it) -------------------------

SECURE_BOOT_FEATURES = ("enrolled-keys", "secure-boot")


def secure_boot(root: etree._Element) -> bool:
    """Whether the domain asks for UEFI Secure Boot (firmware auto-selection feature or a secure loader)."""
    os_el = root.find("os")
    if os_el is None:
        return False
    feature = os_el.find("firmware/feature[@name='secure-boot']")
    if feature is not None:
        return feature.get("enabled") == "yes"
    loader = os_el.find("loader")
    return loader is not None and loader.get("secure") == "yes"


def set_secure_boot(root: etree._Element) -> None:
    """UEFI with Secure Boot and Microsoft's keys enrolled, chosen by libvirt's firmware auto-selection
    (``<os firmware='efi'><firmware><feature enabled='yes' name='secure-boot'/>...``, OVMF's descriptors in
    /usr/share/qemu/firmware), and SMM, which a secure-boot OVMF needs to protect its variable store."""
    os_el = ensure(root, "os")
    os_el.set("firmware", "efi")
    firmware = ensure(os_el, "firmware")
    for name in SECURE_BOOT_FEATURES:
        feature = firmware.find(f"feature[@name='{name}']")
        if feature is None:
            feature = etree.SubElement(firmware, "feature")
        feature.set("enabled", "yes")
        feature.set("name", name)
    features = ensure(root, "features")
    smm = features.find("smm")
    if smm is None:
        smm = etree.SubElement(features, "smm")
    smm.set("state", "on")


def set_windows_time(root: etree._Element, *, hyperv: bool) -> None:
    """Windows keeps the RTC in local time; with KVM it also gets the Hyper-V enlightenments it expects
    (relaxed timing, virtual APIC, spinlock hints and the Hyper-V clock). QEMU offers those only with KVM,
    so a TCG guest gets the clock offset alone."""
    clock = ensure(root, "clock")
    clock.set("offset", "localtime")
    if not hyperv:
        return
    features = ensure(root, "features")
    hv = features.find("hyperv")
    if hv is None:
        hv = etree.SubElement(features, "hyperv")
    for name, attrs in (("relaxed", {}), ("vapic", {}), ("spinlocks", {"retries": "8191"})):
        el = hv.find(name)
        if el is None:
            el = etree.SubElement(hv, name)
        el.set("state", "on")
        for key, value in attrs.items():
            el.set(key, value)
    if clock.find("timer[@name='hypervclock']") is None:
        etree.SubElement(clock, "timer", name="hypervclock", present="yes")
