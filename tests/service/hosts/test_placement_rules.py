"""Placement's rules on given host facts (the decision alone; tests/service/hosts/test_placement.py places
VMs on the test bed): memory with and without a cap, the vCPU overcommit limit, NUMA fit, maintenance and
down hosts refused, the most room chosen, every refusal explained."""

from __future__ import annotations

import pytest

from kvmkit.errors import InvalidState
from kvmkit.service.hosts.placement import choose, decide, judge, require_host

pytestmark = pytest.mark.fast


def facts(free: int = 8000, cores: int = 4, vcpus: int = 0, used: int = 0) -> dict[str, int]:
    return {"free_memory_mib": free, "cores": cores, "vcpus_running": vcpus, "memory_running_mib": used}


NODE = [{"id": 0, "cpus": [0, 1, 2, 3], "free_mib": 8000}]


def test_memory_free_and_capped() -> None:
    ok = judge("a", facts(free=1000), vcpus=1, memory_mib=512)
    assert ok.ok and ok.memory_after_mib == 488
    full = judge("b", facts(free=400), vcpus=1, memory_mib=512)
    assert not full.ok and "needs 512 MiB, 400 MiB free" in full.reason
    capped = judge("c", facts(free=8000, used=256), vcpus=1, memory_mib=256, max_memory_mib=300)
    assert not capped.ok and "44 MiB free" in capped.reason and "capped at 300 MiB" in capped.reason


def test_vcpu_overcommit_default_is_one_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVMKIT_CPU_OVERCOMMIT", raising=False)
    assert judge("a", facts(cores=2, vcpus=1), vcpus=1, memory_mib=64).ok
    over = judge("a", facts(cores=2, vcpus=2), vcpus=1, memory_mib=64)
    assert not over.ok and "3 vCPUs on 2 physical cores" in over.reason and "limit 1" in over.reason
    assert judge("a", facts(cores=2, vcpus=2), vcpus=1, memory_mib=64, cpu_overcommit=4).ok  # per host
    monkeypatch.setenv("KVMKIT_CPU_OVERCOMMIT", "2")  # the global default
    assert judge("a", facts(cores=2, vcpus=2), vcpus=1, memory_mib=64).ok


def test_down_and_maintenance_are_refused() -> None:
    down = judge("d", None, vcpus=1, memory_mib=64, error="connection refused")
    assert not down.ok and down.state == "down" and "connection refused" in down.reason
    maint = judge("m", facts(), vcpus=1, memory_mib=64, maintenance=True)
    assert not maint.ok and "maintenance" in maint.reason


def test_numa_fit_first_then_the_most_memory_left() -> None:
    two_nodes = [{"id": 0, "cpus": [0, 1], "free_mib": 4000}, {"id": 1, "cpus": [2, 3], "free_mib": 4000}]
    big_spanning = judge("a", facts(free=16000), vcpus=2, memory_mib=6000, nodes=two_nodes)
    small_fitting = judge("b", facts(free=8000), vcpus=2, memory_mib=6000, nodes=NODE)
    assert big_spanning.numa_node is None and "span nodes" in big_spanning.notes[0]
    assert small_fitting.numa_node == 0
    assert choose([big_spanning, small_fitting]) is small_fitting
    c1 = judge("c1", facts(free=3000), vcpus=1, memory_mib=512, nodes=NODE)
    c2 = judge("c2", facts(free=5000), vcpus=1, memory_mib=512, nodes=NODE)
    d = decide([c1, c2], vcpus=1, memory_mib=512)
    assert d["chosen"] == "c2" and d["reason"].startswith("host c2: 4488 MiB left")


def test_nothing_fits_says_why_for_every_host() -> None:
    d = decide([judge("a", facts(free=100), vcpus=1, memory_mib=512), judge("b", None, vcpus=1, memory_mib=512)],
               vcpus=1, memory_mib=512)
    assert d["chosen"] is None
    with pytest.raises(InvalidState) as err:
        require_host(d, "web1")
    assert "a: not enough memory" in err.value.message and "b: down" in err.value.message
    assert "--host" in (err.value.hint or "")
