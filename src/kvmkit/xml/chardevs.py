"""Character devices: the serial console (pty, with a log file) and the guest-agent channel.

libvirt makes the first <console> an alias of the first <serial> when its target type is serial, and
refuses a serial console anywhere else: one added here goes before other consoles (virtio, sclp).

A serial log is append-only: libvirt (through virtlogd) truncates a character device's ``<log file=.../>``
each time QEMU opens it (a boot, a revert to a running snapshot, a restore from a save image, an incoming
migration) unless the element says ``append='on'``; a ``<serial type='file'>`` truncates its
``<source path=.../>`` the same way. kvmkit writes ``append='on'`` on every log it defines, and
:func:`keep_log_history` adds it to definitions written without it (older kvmkit, other tools).
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from kvmkit.xml.util import ensure, insert_ordered, remove

FIELDS = ("serial", "serial_log", "guest_agent")
AGENT = "org.qemu.guest_agent.0"
CHARDEVS = ("serial", "console", "parallel", "channel")


def keep_log_history(root: etree._Element) -> list[str]:
    """Give every log file of the character devices of a domain tree ``append='on'`` where the attribute is
    missing (libvirt then truncates the file whenever QEMU starts); return those files. An explicit
    ``append='off'`` is the definition's owner asking for a fresh file each time: it stays."""
    devices = root.find("devices")
    changed: set[str] = set()
    for dev in devices if devices is not None else ():
        if dev.tag not in CHARDEVS:
            continue
        targets = [dev.find("log")]
        if dev.get("type") == "file":
            targets.append(dev.find("source"))
        for el in targets:
            path = el.get("file" if el.tag == "log" else "path") if el is not None else None
            if el is not None and path and el.get("append") is None:
                el.set("append", "on")
                changed.add(path)
    return sorted(changed)


def _agent(devices: etree._Element | None) -> etree._Element | None:
    if devices is None:
        return None
    for ch in devices.findall("channel"):
        target = ch.find("target")
        if target is not None and target.get("name") == AGENT:
            return ch
    return None


def read(root: etree._Element) -> dict[str, Any]:
    devices = root.find("devices")
    serial = devices.find("serial") if devices is not None else None
    log = serial.find("log") if serial is not None else None
    return {
        "serial": serial is not None,
        "serial_log": log.get("file") if log is not None else None,
        "guest_agent": _agent(devices) is not None,
    }


def write(root: etree._Element, spec: Any) -> None:
    old = read(root)
    devices = ensure(root, "devices")
    if (old["serial"], old["serial_log"]) != (spec.serial, spec.serial_log):
        _write_serial(devices, spec)
    if old["guest_agent"] != spec.guest_agent:
        if spec.guest_agent:
            ch = insert_ordered(devices, etree.Element("channel", type="unix"))
            etree.SubElement(ch, "target", type="virtio", name=AGENT)
        else:
            remove(_agent(devices))


def _write_serial(devices: etree._Element, spec: Any) -> None:
    serial = devices.find("serial")
    if not spec.serial:
        for el in devices.findall("serial"):
            remove(el)
        for con in devices.findall("console"):
            if _is_serial_console(con):
                remove(con)
        return
    if serial is None:
        serial = insert_ordered(devices, etree.Element("serial", type="pty"))
        etree.SubElement(serial, "target", port="0")
    consoles = devices.findall("console")
    if not any(_is_serial_console(c) for c in consoles):
        con = etree.Element("console", type="pty")
        etree.SubElement(con, "target", type="serial", port="0")
        if consoles:
            consoles[0].addprevious(con)
        else:
            insert_ordered(devices, con)
    log = serial.find("log")
    if spec.serial_log is None:
        remove(log)
        return
    if log is None:
        log = etree.Element("log")
        target = serial.find("target")
        if target is not None:
            target.addprevious(log)
        else:
            serial.append(log)
    log.set("file", spec.serial_log)
    log.set("append", log.get("append", "on"))


def _is_serial_console(con: etree._Element) -> bool:
    target = con.find("target")
    return target is None or target.get("type", "serial") == "serial"
