"""vCPU and emulator pinning on real running micro-guests: live, persistent, automatic, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import libvirt
import pytest
from lxml import etree

from kvmkit.errors import InvalidInput, InvalidState, NotFound
from kvmkit.host.topology import host_topology
from kvmkit.service.vms import pinning

KVMKIT = [sys.executable, "-m", "kvmkit"]


def _cpus(cpumap) -> list[int]:
    return [i for i, on in enumerate(cpumap) if on]


def _saved_pins(dom) -> dict[str, str]:
    root = etree.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode())
    pins = {p.get("vcpu"): p.get("cpuset") for p in root.findall("cputune/vcpupin")}
    emu = root.find("cputune/emulatorpin")
    if emu is not None:
        pins["emulator"] = emu.get("cpuset")
    return pins


@pytest.fixture()
def host_cpus(conn) -> list[int]:
    return sorted(c for n in host_topology(conn).nodes for c in n.cpus)


@pytest.mark.guest
def test_pin_vcpus_and_emulator_live_and_persistent(conn, micro_guest, host_cpus):
    g = micro_guest("pin", vcpus=2)
    g.log.wait_for("KVMKIT-GUEST-READY")
    last = host_cpus[-1]
    result = pinning.pin(conn, g.name, vcpus={0: str(last), 1: str(host_cpus[0])}, emulator=str(last))
    assert result["live"] and result["config"]
    assert result["vcpupin"] == {"0": str(last), "1": str(host_cpus[0])} and result["emulatorpin"] == str(last)
    live = g.dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)
    assert _cpus(live[0]) == [last] and _cpus(live[1]) == [host_cpus[0]]
    assert _cpus(g.dom.emulatorPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)) == [last]
    deadline = time.monotonic() + 120  # the CPU a thread last ran on updates when it next runs (every 2 s)
    while g.dom.vcpus()[0][0][3] != last and time.monotonic() < deadline:
        time.sleep(0.5)
    assert g.dom.vcpus()[0][0][3] == last  # vCPU 0 really runs on that host CPU
    assert _saved_pins(g.dom) == {"0": str(last), "1": str(host_cpus[0]), "emulator": str(last)}
    place = pinning.placement(conn, g.dom)
    assert place["vcpu_affinity"] == {"0": str(last), "1": str(host_cpus[0])} and place["nodes"]
    # host info shows the placement of running VMs
    res = subprocess.run([*KVMKIT, "host", "info", "--json"], capture_output=True, text=True, timeout=60)
    mine = [v for v in json.loads(res.stdout)["vms"] if v["name"] == g.name]
    assert mine and mine[0]["vcpu_affinity"]["0"] == str(last) and mine[0]["emulator_affinity"] == str(last)


@pytest.mark.guest
def test_live_only_leaves_the_definition_alone(conn, micro_guest, host_cpus):
    g = micro_guest("pinlive")
    pinning.pin(conn, g.name, vcpus={0: str(host_cpus[0])}, live=True)
    assert _cpus(g.dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)[0]) == [host_cpus[0]]
    assert _saved_pins(g.dom) == {}


@pytest.mark.guest
def test_config_only_on_a_stopped_vm_and_live_refused(conn, micro_guest, host_cpus):
    g = micro_guest("pinoff", start=False)
    res = pinning.pin(conn, g.name, vcpus={0: str(host_cpus[-1])})
    assert not res["live"] and res["config"] and _saved_pins(g.dom) == {"0": str(host_cpus[-1])}
    with pytest.raises(InvalidState, match="not running"):
        pinning.pin(conn, g.name, vcpus={0: "0"}, live=True)


@pytest.mark.guest
def test_auto_picks_the_node_with_most_free_memory(conn, micro_guest):
    g = micro_guest("pinauto", vcpus=2)
    topo = host_topology(conn)
    best = max(topo.nodes, key=lambda n: (n.free_mib or 0, len(n.cpus)))
    res = pinning.auto_pin(conn, g.name)
    assert res["node"] == best.id
    for vcpu, cpus in res["vcpupin"].items():
        assert int(cpus) in best.cpus, (vcpu, cpus)
    if len(best.cpus) >= 2:
        assert len(set(res["vcpupin"].values())) == 2  # spread over different CPUs
    assert res["emulatorpin"] == best.to_dict()["cpulist"]
    assert set(_saved_pins(g.dom)) == {"0", "1", "emulator"}
    saved = etree.fromstring(g.dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE).encode()).find("numatune/memory")
    assert (saved.get("mode"), saved.get("nodeset")) == ("strict", str(best.id)) and res["numatune"]
    g.dom.destroy()  # the saved placement boots
    g.dom.create()
    g.log.wait_for("KVMKIT-GUEST-READY", after=0)
    assert pinning.placement(conn, g.dom)["nodes"] == [best.id]


@pytest.mark.guest
def test_bad_pins_are_refused_and_nothing_half_done(conn, micro_guest, host_cpus):
    g = micro_guest("pinbad", vcpus=2)
    before = [tuple(m) for m in g.dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)]
    with pytest.raises(InvalidInput, match="no vCPU 5"):
        pinning.pin(conn, g.name, vcpus={0: "0", 5: "0"})
    with pytest.raises(InvalidInput, match=f"host CPU {len(host_cpus) + 7} does not exist"):
        pinning.pin(conn, g.name, vcpus={0: str(host_cpus[0]), 1: str(len(host_cpus) + 7)})
    with pytest.raises(InvalidInput, match="bad CPU list"):
        pinning.pin(conn, g.name, emulator="zero")
    with pytest.raises(InvalidInput, match="nothing to pin"):
        pinning.pin(conn, g.name)
    assert [tuple(m) for m in g.dom.vcpuPinInfo(libvirt.VIR_DOMAIN_AFFECT_LIVE)] == before
    with pytest.raises(NotFound):
        pinning.pin(conn, "kt-no-such-vm", vcpus={0: "0"})


@pytest.mark.guest
def test_cli_vm_pin(micro_guest, host_cpus):
    g = micro_guest("pincli", vcpus=2)
    res = subprocess.run([*KVMKIT, "vm", "pin", g.name, "--vcpu", "0", "--cpus", str(host_cpus[-1]), "--vcpu", "1",
                          "--cpus", str(host_cpus[0]), "--emulator", str(host_cpus[0]), "--live", "--json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["vcpupin"]["0"] == str(host_cpus[-1]) and data["live"] and not data["config"]
    auto = subprocess.run([*KVMKIT, "vm", "pin", g.name, "--auto"], capture_output=True, text=True, timeout=60)
    assert auto.returncode == 0 and "NUMA node" in auto.stdout
    bad = subprocess.run([*KVMKIT, "vm", "pin", g.name, "--vcpu", "0"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.startswith("error: 1 --vcpu but 0 --cpus")


@pytest.mark.fast
def test_placement_on_the_test_driver(test_conn):
    rows = pinning.placements(test_conn)
    test = next(r for r in rows if r["name"] == "test")
    assert test["vcpus"] == 2 and test["vcpu_affinity"] == {"0": "0-7", "1": "0-7"} and test["nodes"] == [0]
