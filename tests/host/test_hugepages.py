"""Huge pages for real: run-time allocation, a huge-page-backed micro-guest taking memory/2 MiB pages, and
the clear refusal when too few are free. nr_hugepages is restored afterwards (hugepages_saved)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput, InvalidState
from kvmkit.host import hugepages

KVMKIT = [sys.executable, "-m", "kvmkit"]
MEMORY_MIB = 256
PAGES = MEMORY_MIB // 2


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _hugepage_guest(conn, micro_guest, suffix: str, *, memfd: bool = True):
    """A micro-guest whose XML gets <memoryBacking><hugepages><page size=2048 KiB/></hugepages> (+ memfd
    source: no hugetlbfs mount is needed, which this host lacks)."""
    g = micro_guest(suffix, start=False, memory_mib=MEMORY_MIB)
    root = etree.fromstring(g.dom.XMLDesc(0).encode())
    mb = etree.Element("memoryBacking")
    hp = etree.SubElement(mb, "hugepages")
    etree.SubElement(hp, "page", size="2048", unit="KiB")
    if memfd:
        etree.SubElement(mb, "source", type="memfd")
    root.find("currentMemory").addnext(mb)
    return conn.defineXML(etree.tostring(root, encoding="unicode")), g.log


@pytest.mark.fast
def test_allocate_reports_what_the_kernel_gave(hugepages_saved):
    want = hugepages_saved + 8
    result = hugepages.allocate(want, "2M")
    assert result["requested"] == want and result["runtime"]
    assert result["allocated"] == _meminfo("HugePages_Total") == want and result["complete"]
    res = subprocess.run([*KVMKIT, "host", "hugepages", "--count", str(hugepages_saved), "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["allocated"] == hugepages_saved == _meminfo("HugePages_Total")


@pytest.mark.fast
def test_one_gib_pages_print_the_kernel_command_line(hugepages_saved):
    result = hugepages.allocate(4, "1G")
    assert result["kernel_cmdline"] == "default_hugepagesz=1G hugepagesz=1G hugepages=4" and not result["runtime"]
    res = subprocess.run([*KVMKIT, "host", "hugepages", "--count", "4", "--size", "1G"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "default_hugepagesz=1G hugepagesz=1G hugepages=4" in res.stdout
    with pytest.raises(InvalidInput, match="3M"):
        hugepages.allocate(1, "3M")
    with pytest.raises(InvalidInput, match="negative"):
        hugepages.allocate(-1)


@pytest.mark.guest
def test_hugepage_vm_takes_memory_over_2mib_pages(conn, micro_guest, hugepages_saved):
    hugepages.allocate(hugepages_saved + PAGES + 16, "2M")
    dom, log = _hugepage_guest(conn, micro_guest, "hp")
    need = hugepages.check_domain_can_start(conn, dom)
    assert need["pages"] == PAGES and need["size"] == "2M"
    free_before = _meminfo("HugePages_Free")
    dom.create()
    log.wait_for("KVMKIT-GUEST-READY")
    assert free_before - _meminfo("HugePages_Free") == PAGES
    dom.destroy()
    assert _meminfo("HugePages_Free") == free_before


@pytest.mark.guest
def test_too_few_free_pages_refuse_to_start_with_counts(conn, micro_guest, hugepages_saved):
    pool = hugepages.pool(2048)
    hugepages.allocate(pool["total"] - pool["available"] + 10, "2M")  # 10 available, 128 needed
    dom, _ = _hugepage_guest(conn, micro_guest, "hpfew")
    with pytest.raises(InvalidState) as err:
        hugepages.check_domain_can_start(conn, dom)
    msg = err.value.message
    assert f"needs {PAGES} huge pages of 2M" in msg and "only 10 are free" in msg and dom.name() in msg
    assert "kvmkit host hugepages --count" in err.value.hint
    # the lifecycle start() and the CLI refuse the same way, before libvirt tries
    from kvmkit.service.vms.lifecycle import start

    with pytest.raises(InvalidState, match="only 10 are free"):
        start(conn, dom.name())
    res = subprocess.run([*KVMKIT, "vm", "start", dom.name()], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and f"needs {PAGES} huge pages" in res.stderr.splitlines()[0]
    assert not dom.isActive()


@pytest.mark.guest
def test_hugetlbfs_backing_without_a_mount_is_explained(conn, micro_guest, hugepages_saved):
    from kvmkit.host import sysfs

    hugepages.allocate(hugepages_saved + PAGES, "2M")
    dom, _ = _hugepage_guest(conn, micro_guest, "hpfile", memfd=False)
    if sysfs.mounts_of_type("hugetlbfs"):
        assert hugepages.check_domain_can_start(conn, dom)["pages"] == PAGES
    else:
        with pytest.raises(InvalidState, match="no hugetlbfs is mounted") as err:
            hugepages.check_domain_can_start(conn, dom)
        assert "memfd" in err.value.hint


@pytest.mark.fast
def test_vm_without_hugepages_needs_nothing(test_conn):
    dom = test_conn.lookupByName("test")
    assert hugepages.check_domain_can_start(test_conn, dom) is None
