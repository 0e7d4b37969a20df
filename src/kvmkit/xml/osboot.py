"""<os>: machine type, firmware (BIOS or UEFI via firmware='efi'), boot order, direct kernel boot.

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

    def text(tag: str) -> str | None:
        el = os_el.find(tag)
        return el.text if el is not None and el.text else None

    return {
        "machine": typ.get("machine") if typ is not None else None,
        "firmware": "uefi" if uefi else "bios",
        "boot": [b.get("dev") for b in os_el.findall("boot") if b.get("dev") in ("hd", "cdrom", "network", "fd")],
        "kernel": text("kernel"),
        "initrd": text("initrd"),
        "cmdline": text("cmdline"),
    }


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
        if spec.firmware == "uefi":
            os_el.set("firmware", "efi")
        else:
            os_el.attrib.pop("firmware", None)
            remove(os_el.find("loader"))
            remove(os_el.find("nvram"))
            remove(os_el.find("firmware"))
    if old["boot"] != spec.boot:
        for b in os_el.findall("boot"):
            remove(b)
        for dev in spec.boot:
            new_child(os_el, "boot", dev=dev)
    for tag in ("kernel", "initrd", "cmdline"):
        if old[tag] != getattr(spec, tag):
            set_text_child(os_el, tag, getattr(spec, tag))
