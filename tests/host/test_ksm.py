"""KSM for real: three identical micro-guests share pages; the saving is pages_sharing x page size;
unmerge splits them again. The host's KSM settings are restored afterwards (ksm_saved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.host import ksm, sysfs

KVMKIT = [sys.executable, "-m", "kvmkit"]


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout:.0f} s; KSM: {ksm.status()}")
        time.sleep(0.5)


@pytest.mark.guest
def test_three_identical_guests_share_pages_and_unmerge(micro_guest, ksm_saved):
    guests = [micro_guest(f"ksm{i}", memory_mib=256) for i in range(3)]
    for g in guests:
        g.log.wait_for("KVMKIT-GUEST-READY")
    result = ksm.configure(run=1, sleep_ms=10, pages_to_scan=20000)
    assert result["run"] == 1 and result["sleep_millisecs"] == 10 and result["pages_to_scan"] == 20000
    assert {c["path"].rsplit("/", 1)[1] for c in result["changed"]} >= {"run"}
    status = _wait(lambda: (s := ksm.status())["pages_sharing"] > 0 and s, 90, "no pages_sharing")
    assert status["saved_bytes"] == status["pages_sharing"] * os.sysconf("SC_PAGE_SIZE") > 0
    # the CLI reports the same arithmetic from one reading
    res = subprocess.run([*KVMKIT, "host", "ksm", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    shown = json.loads(res.stdout)
    assert shown["pages_sharing"] > 0 and shown["saved_bytes"] == shown["pages_sharing"] * shown["page_size"]
    human = subprocess.run([*KVMKIT, "host", "ksm"], capture_output=True, text=True, timeout=60).stdout
    assert "pages_sharing=" in human and "saved=" in human
    # unmerge: run=2 splits every shared page
    res = subprocess.run([*KVMKIT, "host", "ksm", "--unmerge", "--json"], capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stderr
    after = json.loads(res.stdout)
    assert after["run"] == 2 and after["pages_sharing"] == 0 and after["saved_bytes"] == 0
    assert sysfs.read_int(sysfs.KSM_DIR / "pages_sharing") == 0


@pytest.mark.guest
def test_nosharepages_opt_out_is_seen_in_xml(micro_guest):
    from lxml import etree

    g = micro_guest("noshare", start=False)
    xml = g.dom.XMLDesc(0)
    assert ksm.domain_shares_pages(xml)
    root = etree.fromstring(xml.encode())
    mb = etree.SubElement(root, "memoryBacking")
    etree.SubElement(mb, "nosharepages")
    assert not ksm.domain_shares_pages(etree.tostring(root, encoding="unicode"))


@pytest.mark.fast
def test_bad_ksm_values_are_refused(ksm_saved):
    with pytest.raises(InvalidInput, match="0, 1 or 2"):
        ksm.configure(run=3)
    with pytest.raises(InvalidInput, match="pages-to-scan"):
        ksm.configure(pages_to_scan=0)
    res = subprocess.run([*KVMKIT, "host", "ksm", "--enable", "--disable"], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode != 0 and res.stderr.startswith("error: give only one of")
    assert ksm.settings() == ksm_saved
