"""Host topology and `kvmkit host info`, checked against sysfs/procfs and libvirt on this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvmkit.errors import InvalidInput
from kvmkit.host.topology import format_cpulist, host_info, host_topology, parse_cpulist

KVMKIT = [sys.executable, "-m", "kvmkit"]


@pytest.mark.fast
def test_cpulist_round_trip():
    assert parse_cpulist("0-3,8,10-11") == [0, 1, 2, 3, 8, 10, 11]
    assert format_cpulist([11, 0, 1, 2, 8, 10]) == "0-2,8,10-11"
    for bad in ("", "3-1", "a", "1,,x"):
        with pytest.raises(InvalidInput):
            parse_cpulist(bad)


@pytest.mark.fast
def test_host_topology_matches_sysfs_and_libvirt(conn):
    topo = host_topology(conn)
    online = parse_cpulist(Path("/sys/devices/system/cpu/online").read_text())
    assert sorted(c for n in topo.nodes for c in n.cpus) == online
    assert topo.sockets * topo.cores_per_socket * topo.threads_per_core == len(online)
    free = conn.getCellsFreeMemory(0, len(topo.nodes))
    for node in topo.nodes:
        total_kb = int(next(line.split()[3] for line in
                            Path(f"/sys/devices/system/node/node{node.id}/meminfo").read_text().splitlines()
                            if "MemTotal" in line))
        assert node.memory_mib == total_kb // 1024
        # free memory moves while other guests run: same order of magnitude as libvirt's number
        assert node.free_mib is not None and abs(node.free_mib - free[node.id] // 2**20) < 1024


@pytest.mark.fast
def test_host_info_sections(conn):
    info = host_info(conn)
    assert info["memory"]["total_mib"] > 0 and info["caches"]
    assert info["ksm"]["available"] and info["ksm"]["saved_bytes"] == info["ksm"]["pages_sharing"] * os.sysconf(
        "SC_PAGE_SIZE")
    assert {p["size"] for p in info["hugepages"]} >= {"2M"}
    assert info["thp"]["enabled"] in info["thp"]["enabled_options"]
    vda = [s for s in info["io_schedulers"] if s["scheduler"]]
    assert vda and all(s["scheduler"] in s["available"] for s in vda)


@pytest.mark.fast
def test_cli_host_info_json():
    res = subprocess.run([*KVMKIT, "host", "info", "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert {"sockets", "cores_per_socket", "threads_per_core", "nodes", "caches", "memory", "ksm", "thp",
            "hugepages", "io_schedulers", "vms"} <= set(data)
    human = subprocess.run([*KVMKIT, "host", "info"], capture_output=True, text=True, timeout=60)
    assert human.returncode == 0 and "NUMA nodes" in human.stdout and "KSM" in human.stdout


@pytest.mark.fast
def test_remote_or_test_hosts_use_libvirts_topology(test_conn):
    from kvmkit.host.plan import make_plan, parse_vm

    topo = host_topology(test_conn)  # the test driver describes a 2-socket, 2-node, 16-CPU host
    assert topo.source == "libvirt:test:///default"
    assert (topo.sockets, topo.cores_per_socket, topo.threads_per_core) == (2, 8, 1)
    assert [(n.id, n.cpus, n.sockets) for n in topo.nodes] == [(0, list(range(8)), [0]), (1, list(range(8, 16)), [1])]
    assert [n.memory_mib for n in topo.nodes] == [2048, 4096]
    plan = make_plan(topo, [parse_vm(f"v{i}=4c:1G") for i in range(4)])
    assert plan["fits"] and all(len(v["nodes"]) == 1 for v in plan["vms"])


@pytest.mark.fast
def test_cli_host_info_for_another_host_shows_its_libvirt_topology():
    res = subprocess.run([*KVMKIT, "host", "info", "--connect", "test:///default", "--json"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["sockets"] == 2 and len(data["nodes"]) == 2 and "local host only" in data["note"]
    assert [v["nodes"] for v in data["vms"] if v["name"] == "test"] == [[0]]
