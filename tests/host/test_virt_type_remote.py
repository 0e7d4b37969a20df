"""The guest type of another host comes from that host, through its libvirt: bed host c (no /dev/kvm in its
namespace) is refused by its own libvirt's domain capabilities; bed host a (with the machine's /dev/kvm) is
boot-tested on a, as a transient kvm domain whose console is read over the connection. Neither verdict is
the local host's, nor is the local-only KVMKIT_VIRT_TYPE override applied to them."""

from __future__ import annotations

import json

import pytest

from kvmkit.config import cache_dir
from kvmkit.host.virt_type import choose_virt_type, probe_host, probe_kvm

pytestmark = pytest.mark.guest


def test_a_host_without_kvm_says_so_itself(hosts, monkeypatch: pytest.MonkeyPatch) -> None:
    c = hosts.conn("c")
    verdict = probe_host(c, refresh=True)
    assert not verdict.usable
    assert "offers no KVM guests" in verdict.reason and hosts["c"].hostname in verdict.reason
    monkeypatch.setenv("KVMKIT_VIRT_TYPE", "kvm")  # this host's override: not the bed host's business
    virt, why = choose_virt_type(None, c)
    assert virt == "qemu" and hosts["c"].hostname in why
    assert choose_virt_type(None)[0] == "kvm"  # while the local host does take it


def test_a_host_with_dev_kvm_is_boot_tested_there(hosts) -> None:
    a = hosts.conn("a")
    verdict = probe_host(a, refresh=True)
    host = hosts["a"].hostname
    # on a machine with working KVM the guest boots; under nested KVM that hangs (as here) it does not: either
    # way the verdict is of a boot on host a, and agrees with the local probe of the same hardware
    assert any(f"{what} under KVM on host {host}" in verdict.reason for what in ("booted", "hangs"))
    assert verdict.usable == probe_kvm().usable
    assert not [d.name() for d in a.listAllDomains() if d.name().startswith("kvmkit-kvm-probe-")]  # gone again
    uuid = a.getCapabilities().split("<uuid>")[1].split("</uuid>")[0]
    saved = json.loads((cache_dir() / f"kvm-probe-{uuid}.json").read_text())
    assert saved["verdict"]["reason"] == verdict.reason  # cached per host
    assert probe_host(a) == verdict
