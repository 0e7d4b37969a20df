"""Small devices: the memory balloon, the virtio RNG (fed from the host's /dev/urandom) and whether the VM
has a USB controller (``usb: false`` is libvirt's ``<controller type='usb' model='none'/>``).

Turning USB off also removes the devices that only live on a USB bus (libvirt refuses them without one):
USB input devices, host USB devices, USB redirection, hubs, smartcards (a CCID device) and anything
addressed on USB. A disk on the USB bus is refused instead: it holds data, so the caller moves or
detaches it first."""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.xml.util import ensure, insert_ordered, remove

FIELDS = ("balloon", "rng", "usb")
USB_ONLY = ("input[@bus='usb']", "hostdev[@type='usb']", "redirdev[@bus='usb']", "redirfilter", "hub[@type='usb']",
            "smartcard", "sound[@model='usb']", "controller[@type='ccid']", "serial[target/@type='usb-serial']",
            "*[address/@type='usb']")


def read(root: etree._Element) -> dict[str, Any]:
    balloon = root.find("devices/memballoon")
    return {
        # libvirt adds a virtio balloon when the XML has none, so "absent" means "on"
        "balloon": balloon is None or balloon.get("model") != "none",
        "rng": root.find("devices/rng") is not None,
        # likewise libvirt adds a USB controller (pc, q35) unless one with model 'none' is given
        "usb": not any(c.get("model") == "none" for c in root.iterfind("devices/controller[@type='usb']")),
    }


def write(root: etree._Element, spec: Any) -> None:
    old = read(root)
    devices = ensure(root, "devices")
    if old["balloon"] != spec.balloon:
        balloon = devices.find("memballoon")
        if balloon is None:
            balloon = insert_ordered(devices, etree.Element("memballoon"))
        balloon.set("model", "virtio" if spec.balloon else "none")
        if not spec.balloon:
            for child in list(balloon):
                remove(child)
    if old["rng"] != spec.rng:
        if spec.rng:
            rng = insert_ordered(devices, etree.Element("rng", model="virtio"))
            etree.SubElement(rng, "backend", model="random").text = "/dev/urandom"
        else:
            for rng in devices.findall("rng"):
                remove(rng)
    if old["usb"] != spec.usb:
        if not spec.usb:
            _remove_usb_devices(devices)
        for ctl in devices.findall("controller[@type='usb']"):
            remove(ctl)
        if not spec.usb:
            insert_ordered(devices, etree.Element("controller", type="usb", model="none"))


def _remove_usb_devices(devices: etree._Element) -> None:
    on_usb = [t.get("dev") for t in devices.iterfind("disk/target[@bus='usb']")]
    if on_usb:
        raise InvalidInput(f"disk {on_usb[0]} is on the USB bus, so USB cannot be turned off",
                           hint="move the disk to another bus (virtio, sata) or detach it first")
    for path in USB_ONLY:
        for el in devices.xpath(path):
            remove(el)


def tpm(root: etree._Element) -> dict[str, Any] | None:
    """The domain's TPM: model, backend type and TPM version; None without one."""
    el = root.find("devices/tpm")
    if el is None:
        return None
    backend = el.find("backend")
    return {"model": el.get("model"), "backend": backend.get("type") if backend is not None else None,
            "version": backend.get("version") if backend is not None else None}


def add_tpm(root: etree._Element, *, model: str = "tpm-crb", version: str = "2.0") -> None:
    """A TPM emulated by swtpm (libvirt starts one per VM and keeps its state under /var/lib/libvirt/swtpm):
    ``<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>``. Nothing when one exists."""
    devices = ensure(root, "devices")
    if devices.find("tpm") is not None:
        return
    el = insert_ordered(devices, etree.Element("tpm", model=model))
    etree.SubElement(el, "backend", type="emulator", version=version)
