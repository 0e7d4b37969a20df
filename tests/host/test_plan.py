"""NUMA placement advice: the seeds' 2-socket mail-server example, and the warnings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from kvmkit.errors import InvalidInput
from kvmkit.host.plan import make_plan, parse_vm
from kvmkit.host.topology import load_topology, topology_from_dict

SEED_HOST = Path(__file__).parent / "data" / "two-socket-128g.json"
KVMKIT = [sys.executable, "-m", "kvmkit"]


@pytest.mark.fast
def test_seed_example_four_mail_servers_fit_each_in_one_node():
    topo = load_topology(SEED_HOST)
    assert (topo.sockets, topo.cores, topo.memory_mib) == (2, 16, 128 * 1024)
    vms = [parse_vm(f"mail{i}=4c:32G") for i in range(1, 5)]
    plan = make_plan(topo, vms)
    assert plan["fits"] and plan["warnings"] == []
    used: set[int] = set()
    for row in plan["vms"]:
        assert len(row["nodes"]) == 1 and row["vcpus"] == 4 and row["memory_mib"] == 32768
        node = topo.nodes[row["nodes"][0]]
        cpus = set(row["vcpupin"].values())
        assert len(cpus) == 4 and cpus <= set(node.cpus) and not cpus & used  # own cores inside its node
        used |= cpus
        xml = etree.fromstring(f"<x>{row['xml']}</x>")
        assert xml.find("numatune/memory").get("nodeset") == str(node.id)
        assert [int(p.get("cpuset")) for p in xml.findall("cputune/vcpupin")] == list(row["vcpupin"].values())
    assert sorted(len([r for r in plan["vms"] if r["nodes"] == [n]]) for n in (0, 1)) == [2, 2]


@pytest.mark.fast
def test_overcommit_warns_above_ratio_only():
    topo = load_topology(SEED_HOST)
    vms = [parse_vm(f"v{i}=8c:8G") for i in range(3)]  # 24 vCPUs on 16 cores
    assert any("overcommit" in w for w in make_plan(topo, vms)["warnings"])
    assert not any("overcommit" in w for w in make_plan(topo, vms, overcommit=2.0)["warnings"])


@pytest.mark.fast
def test_crossing_topologies_and_vms_larger_than_a_node_are_warned():
    topo = load_topology(SEED_HOST)
    plan = make_plan(topo, [parse_vm("odd=6c:8G:2x3"), parse_vm("big=12c:96G")])
    text = "\n".join(plan["warnings"])
    assert "odd: guest topology 2x3" in text and "cross host sockets" in text
    assert "big: larger than a NUMA node" in text and "sockets [0, 1]" in text
    big = next(r for r in plan["vms"] if r["name"] == "big")
    assert big["nodes"] == [0, 1] and not big["fits_one_node"] and not plan["fits"]
    assert not make_plan(topo, [parse_vm("ok=4c:8G:2x2")])["warnings"]


@pytest.mark.fast
def test_topology_without_nodes_is_split_per_socket():
    topo = topology_from_dict({"sockets": 2, "cores_per_socket": 4, "memory": "64G"})
    assert [(n.cpus, n.memory_mib) for n in topo.nodes] == [([0, 1, 2, 3], 32768), ([4, 5, 6, 7], 32768)]


@pytest.mark.fast
@pytest.mark.parametrize("bad", ["4:32G", "c:1G", "0c:1G", "4c:lots", "4c:8G:3x3", "a b=1c:1G"])
def test_bad_vm_requests_name_the_problem(bad):
    with pytest.raises(InvalidInput) as err:
        parse_vm(bad)
    assert bad in err.value.message or "size" in err.value.message


@pytest.mark.fast
def test_bad_topology_file(tmp_path):
    path = tmp_path / "t.json"
    path.write_text('{"sockets": 2}')
    with pytest.raises(InvalidInput, match="cores_per_socket"):
        load_topology(path)
    with pytest.raises(InvalidInput, match="does not exist"):
        load_topology(tmp_path / "missing.json")


@pytest.mark.fast
def test_cli_plan_json_and_human():
    args = ["host", "plan", "--topology", str(SEED_HOST)] + [a for i in range(4) for a in ("--vm", f"m{i}=4c:32G")]
    res = subprocess.run([*KVMKIT, *args, "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["fits"] and [len(v["nodes"]) for v in data["vms"]] == [1, 1, 1, 1]
    human = subprocess.run([*KVMKIT, *args], capture_output=True, text=True, timeout=60)
    assert "all VMs fit" in human.stdout and "<vcpupin" in human.stdout
    bad = subprocess.run([*KVMKIT, "host", "plan", "--vm", "4x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.startswith("error: bad --vm '4x'")


@pytest.mark.fast
def test_plan_for_this_host_uses_its_real_nodes(conn):
    from kvmkit.host.topology import host_topology

    topo = host_topology(conn)
    cpus = len(topo.nodes[0].cpus)
    plan = make_plan(topo, [parse_vm(f"small=1c:{max(topo.nodes[0].memory_mib // 4, 1)}M")])
    assert plan["vms"][0]["nodes"] == [topo.nodes[0].id] or cpus == 0
