"""Replacing a VM's definition (service/vms/xml_edit.py) on real micro-guests: a harmless change is
defined and diffed; libvirt's schema rejections name the element; another VM's name or UUID, and dropping a
device the running VM uses, are refused with nothing changed; a device attached only live may go."""

from __future__ import annotations

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import InvalidInput, InvalidState
from kvmkit.images import qemu_img
from kvmkit.service.vms import devices, xml_edit

pytestmark = pytest.mark.guest


def _inactive(dom: libvirt.virDomain) -> str:
    return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)


def _edit(xml: str, fn) -> str:
    root = etree.fromstring(xml.encode())
    fn(root)
    return etree.tostring(root, encoding="unicode")


def _set_title(root: etree._Element) -> None:
    el = etree.Element("title")
    el.text = "edited"
    root.find("uuid").addnext(el)


def test_replace_defines_and_diffs_a_harmless_change(conn, micro_guest) -> None:
    guest = micro_guest("x", start=False)
    before = _inactive(guest.dom)
    out = xml_edit.replace_xml(conn, guest.name, _edit(before, _set_title))
    assert out["changed"] and not out["running"] and out["applies"] == "now"
    assert "+  <title>edited</title>" in out["diff"].splitlines()
    assert out["summary"]["title"] == "edited" and out["warnings"] == []
    assert conn.lookupByName(guest.name).metadata(libvirt.VIR_DOMAIN_METADATA_TITLE, None, 0) == "edited"
    # the UUID may be left out (it is kept); the same text again changes nothing
    same = xml_edit.replace_xml(conn, guest.name, _edit(_inactive(guest.dom), lambda r: r.remove(r.find("uuid"))))
    assert same["changed"] is False and same["diff"] == ""


def test_schema_rejections_name_the_element_and_change_nothing(conn, micro_guest) -> None:
    guest = micro_guest("bad", start=False, networks=[{"network": "default"}])
    before = _inactive(guest.dom)
    cases = {
        "<interface type='netwrk'>": before.replace("<interface type='network'>", "<interface type='netwrk'>"),
        "<bogus>": before.replace("</devices>", "<bogus/></devices>"),
        "<on_reboot>": before.replace("<on_reboot>restart</on_reboot>", "<on_reboot>explode</on_reboot>"),
    }
    for named, xml in cases.items():
        assert xml != before
        with pytest.raises(InvalidInput, match="schema rejects the XML") as err:
            xml_edit.replace_xml(conn, guest.name, xml)
        assert named in err.value.message, err.value.message
    with pytest.raises(InvalidInput, match="not well-formed"):
        xml_edit.replace_xml(conn, guest.name, "<domain>")
    with pytest.raises(InvalidInput, match="root element is <network>"):
        xml_edit.replace_xml(conn, guest.name, "<network><name>x</name></network>")
    with pytest.raises(InvalidInput, match="names VM 'other'"):
        xml_edit.replace_xml(conn, guest.name, before.replace(f"<name>{guest.name}</name>", "<name>other</name>"))
    uuid = guest.dom.UUIDString()
    with pytest.raises(InvalidInput, match="another UUID would define a second VM"):
        xml_edit.replace_xml(conn, guest.name, before.replace(uuid, "11111111-2222-3333-4444-555555555555"))
    with pytest.raises(InvalidInput, match="has a DOCTYPE"):
        xml_edit.replace_xml(conn, guest.name, '<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + before)
    assert _inactive(guest.dom) == before


def test_dropping_devices_a_running_vm_uses_is_refused(conn, micro_guest, workdir) -> None:
    disk = workdir / "d.qcow2"
    qemu_img.create(disk, "qcow2", 16 * 1024**2)
    disk.chmod(0o666)
    guest = micro_guest("run", networks=[{"network": "default"}], disks=[{"path": str(disk), "format": "qcow2"}])
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=90)
    before = _inactive(guest.dom)
    mac = etree.fromstring(before.encode()).find("devices/interface/mac").get("address")

    def drop(tag: str):
        return lambda root: [el.getparent().remove(el) for el in root.findall(f"devices/{tag}")]

    with pytest.raises(InvalidState, match=f"uses NIC {mac} on default, which the new definition drops") as err:
        xml_edit.replace_xml(conn, guest.name, _edit(before, drop("interface")))
    assert "nic detach" in (err.value.hint or "")
    with pytest.raises(InvalidState, match=r"uses disk vda \(.*d\.qcow2\)") as err:
        xml_edit.replace_xml(conn, guest.name, _edit(before, drop("disk")))
    assert "disk detach" in (err.value.hint or "")
    assert _inactive(guest.dom) == before
    # a NIC attached live only is not in the definition: a new definition without it is fine
    live_only = devices.attach_nic(conn, guest.name, network="default", live=True)["mac"]
    out = xml_edit.replace_xml(conn, guest.name, _edit(before, _set_title))
    assert out["running"] and out["applies"] == "next start" and out["changed"]
    assert "applies from its next start" in out["warnings"][0]
    live = etree.fromstring(guest.dom.XMLDesc(0).encode())
    assert live.find(f"devices/interface/mac[@address='{live_only}']") is not None  # the running VM is untouched
