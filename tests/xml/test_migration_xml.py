"""What a migration reads from a domain's XML, and the one change it makes (logs appended to)."""

from __future__ import annotations

import pytest
from lxml import etree

from kvmkit.xml.migration import logs_appended, read_needs, volume_facts

pytestmark = pytest.mark.fast

DOMAIN = """<domain type='qemu'>
  <name>web</name><uuid>3f51aad6-3436-44cf-9be9-ccd358fe26b2</uuid>
  <memory unit='GiB'>1</memory><currentMemory unit='MiB'>768</currentMemory>
  <vcpu current='2'>4</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><kernel>/boot/k</kernel><initrd>/boot/i</initrd>
      <nvram>/var/lib/libvirt/qemu/nvram/web_VARS.fd</nvram></os>
  <cpu mode='custom' match='exact'><model>qemu64</model><feature policy='require' name='lahf_lm'/></cpu>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
      <source file='/pool/web.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdb'/></disk>
    <interface type='network'><mac address='52:54:00:00:00:01'/><source network='default'/></interface>
    <interface type='bridge'><source bridge='br0'/></interface>
    <serial type='pty'><log file='/var/log/kvmkit/web.serial.log' append='off'/><target port='0'/></serial>
    <console type='pty'><log file='/var/log/kvmkit/web.serial.log' append='off'/><target type='serial'/></console>
    <unknown-device keep='me'/>
  </devices>
</domain>"""


def test_needs() -> None:
    n = read_needs(DOMAIN)
    assert (n.name, n.virt_type, n.arch, n.machine, n.memory_mib, n.vcpus) == ("web", "qemu", "x86_64", "pc-q35-7.2",
                                                                               768, 2)
    assert n.cpu_mode == "custom" and n.cpu_xml is not None and "lahf_lm" in n.cpu_xml
    assert [(d.target, d.path, d.kind, d.readonly, d.format, d.cache, d.source_type) for d in n.disks] == [
        ("vda", "/pool/web.qcow2", "disk", False, "qcow2", "none", "file"),
        ("vdb", "", "disk", False, None, None, "network")]  # the empty CD-ROM drive needs nothing
    assert [(f.target, f.path) for f in n.files] == [
        ("kernel", "/boot/k"), ("initrd", "/boot/i"), ("nvram", "/var/lib/libvirt/qemu/nvram/web_VARS.fd"),
        ("serial-log", "/var/log/kvmkit/web.serial.log")]  # one log file, named twice
    assert [(x.type, x.source, x.mac) for x in n.nics] == [("network", "default", "52:54:00:00:00:01"),
                                                           ("bridge", "br0", None)]


def test_no_cpu_element_is_qemus_default() -> None:
    n = read_needs("<domain type='kvm'><name>x</name><memory>524288</memory><os><type>hvm</type></os></domain>")
    assert n.cpu_xml is None and n.memory_mib == 512 and n.vcpus == 1


def test_logs_appended_changes_only_append() -> None:
    out = logs_appended(DOMAIN)
    assert out is not None
    root = etree.fromstring(out.encode())
    assert [log.get("append") for log in root.iter("log")] == ["on", "on"]
    assert root.find("devices/unknown-device").get("keep") == "me"  # nothing else lost
    assert logs_appended(out) is None  # already appended to: no change to make


def test_volume_facts() -> None:
    xml = """<volume type='file'><name>v.qcow2</name><capacity unit='bytes'>67108864</capacity>
      <allocation unit='bytes'>200704</allocation><target><path>/p/v.qcow2</path><format type='qcow2'/>
      <timestamps><mtime>1796598026.758558039</mtime><ctime>1796598026.758558040</ctime></timestamps></target>
      <backingStore><path>/p/base.qcow2</path></backingStore></volume>"""
    assert volume_facts(xml) == {"name": "v.qcow2", "path": "/p/v.qcow2", "format": "qcow2", "capacity": 67108864,
                                 "allocation": 200704, "mtime": "1796598026.758558039",
                                 "ctime": "1796598026.758558040", "backing": "/p/base.qcow2"}
