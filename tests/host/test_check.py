"""`kvmkit host check`: real checks against this host and qemu:///system."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KVMKIT = [sys.executable, "-m", "kvmkit"]


@pytest.mark.fast
def test_report_lists_every_check_with_status_and_hint():
    from kvmkit.service.host.repair import readiness

    rep = readiness("qemu:///system")
    names = {c["name"] for c in rep["checks"]}
    assert {"cpu_virtualization", "kvm_usable", "libvirtd", "qemu", "default_network", "default_pool",
            "ksm", "hugepages", "iommu", "virtlogd", "confinement", "security_records"} <= names
    for c in rep["checks"]:
        assert c["status"] in ("pass", "warn", "fail")
        if c["status"] != "pass":
            assert c["hint"], f"{c['name']} has no fix hint"
    assert rep["virt_type"] in ("kvm", "qemu")
    assert rep["virt_type_reason"]


@pytest.mark.fast
def test_cli_json_and_exit_code():
    res = subprocess.run([*KVMKIT, "host", "check", "--json"], capture_output=True, text=True, timeout=120)
    data = json.loads(res.stdout)
    assert res.returncode == (0 if data["ready"] else 1)
    assert data["checks"] and data["uri"] == "qemu:///system"


@pytest.mark.fast
def test_unreachable_libvirt_fails_with_hint():
    from kvmkit.service.host.repair import readiness

    rep = readiness("qemu+unix:///system?socket=/nonexistent/kvmkit-test.sock")
    by_name = {c["name"]: c for c in rep["checks"]}
    assert by_name["libvirtd"]["status"] == "fail"
    assert "libvirtd" in by_name["libvirtd"]["hint"]
    assert by_name["confinement"]["status"] == "fail" and by_name["security_records"]["status"] == "warn"
    assert rep["ready"] is False
