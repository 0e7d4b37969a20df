"""``kvmkit host add|list|remove|maintenance`` and ``--host`` on the test bed's daemons (qemu+tcp), with an
inventory in a database of the test's own: a micro-guest created with --host b runs on host b only; vm list
spans the local host and the bed hosts, and a dead host is named in a warning while the others still list;
placement picks the host with room and says why; maintenance keeps a host out of it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli_run import KVMKIT
from tests.support.serial import SerialLog

pytestmark = pytest.mark.guest

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture()
def kv(workdir: Path) -> Run:
    """``kvmkit ARGS`` with this test's own inventory (KVMKIT_DB) and the machine's libvirtd as local."""
    env = {**os.environ, "KVMKIT_CONNECT": "qemu:///system", "KVMKIT_DB": f"sqlite:///{workdir}/kvmkit.db",
           "KVMKIT_NO_WARM": "1"}

    def run(*args: str, check: bool = True, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([KVMKIT, *args], capture_output=True, text=True, env=env, timeout=timeout)
        if check:
            assert res.returncode == 0, f"kvmkit {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
        return res

    return run


def js(res: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(res.stdout)


def add_bed(kv: Run, hosts: Any, *letters: str, extra: dict[str, list[str]] | None = None) -> None:
    for letter in letters:
        kv("host", "add", letter, hosts[letter].uri, *(extra or {}).get(letter, []))


def test_host_add_list_show_remove(kv: Run, hosts: Any) -> None:
    add_bed(kv, hosts, "a", "c", extra={"c": ["--max-memory", "1G", "--cpu-overcommit", "2"]})
    rows = {r["name"]: r for r in js(kv("--json", "host", "list"))}
    assert list(rows) == ["local", "a", "c"]
    for letter in ("a", "c"):
        r = rows[letter]
        assert r["state"] == "up" and r["uri"] == hosts[letter].uri and r["hostname"] == hosts[letter].hostname
        assert r["libvirt_version"] == "9.0.0" or r["libvirt_version"].count(".") == 2
        assert r["cores"] >= 1 and r["memory_mib"] > 0 and r["free_memory_mib"] > 0 and r["vms"] == 0
        assert r["virt_type"] in ("kvm", "qemu") and r["cpu_model"]
    # the guest type as probed on each host: c's own libvirt offers no KVM guests
    assert rows["c"]["virt_type"] == "qemu" and "offers no KVM guests" in rows["c"]["virt_type_reason"]
    assert hosts["a"].hostname in rows["a"]["virt_type_reason"]
    assert rows["c"]["max_memory_mib"] == 1024 and rows["c"]["cpu_overcommit"] == 2
    assert rows["local"]["local"] and rows["local"]["uri"] == "qemu:///system"
    assert js(kv("--json", "host", "show", "a"))["hostname"] == hosts["a"].hostname
    # refusals name the cause
    again = kv("host", "add", "a", hosts["b"].uri, check=False)
    assert again.returncode == 1 and "in the inventory already" in again.stderr
    same = kv("host", "add", "z", hosts["a"].uri, check=False)
    assert same.returncode == 1 and "as host 'a'" in same.stderr
    kv("host", "remove", "c")
    assert [r["name"] for r in js(kv("--json", "host", "list", "--no-probe"))] == ["local", "a"]
    gone = kv("host", "remove", "c", check=False)
    assert gone.returncode == 1 and "not in the inventory" in gone.stderr


def test_a_host_that_does_not_answer_is_not_added_unless_asked(kv: Run, hosts: Any) -> None:
    hosts["b"].kill_libvirtd()
    res = kv("host", "add", "b", hosts["b"].uri, check=False)
    assert res.returncode == 1 and "does not answer" in res.stderr and "--no-check" in res.stderr
    assert [r["name"] for r in js(kv("--json", "host", "list", "--no-probe"))] == ["local"]
    kv("host", "add", "b", hosts["b"].uri, "--no-check")
    rows = {r["name"]: r for r in js(kv("--json", "host", "list", "--no-probe"))}
    assert rows["b"]["state"] == "down" and rows["b"]["error"]
    hosts["b"].start_libvirtd()
    assert {r["name"]: r for r in js(kv("--json", "host", "list", "--no-probe"))}["b"]["state"] == "up"


def test_a_guest_created_with_host_b_runs_on_b_and_vm_list_spans_the_hosts(kv: Run, hosts: Any, conn: Any,
                                                                            prefix: str) -> None:
    add_bed(kv, hosts, "a", "b")
    name = f"{prefix}onb"
    out = js(kv("--json", "--host", "b", "vm", "create", name, "--micro", "--start", "--network", "none"))
    assert out["started"] and "placement" not in out
    assert "on host" in out["virt_type_reason"] or out["virt_type_reason"].startswith("--virt-type")
    SerialLog(out["serial_log"]).wait_for("KVMKIT-GUEST-READY", timeout=120)
    assert name in hosts.names_on("b")
    assert name not in hosts.names_on("a") and name not in {d.name() for d in conn.listAllDomains()}
    # the local guest of the same kind, for the list across hosts
    local = hosts.prefix + "onlocal"
    kv("--json", "--host", "local", "vm", "create", local, "--micro", "--network", "none")

    rows = js(kv("--json", "vm", "list", "--all"))
    mine = {(r["name"], r["host"]) for r in rows if r["name"].startswith(prefix)}
    assert mine == {(name, "b"), (local, "local")}
    only_b = js(kv("--json", "--host", "b", "vm", "list", "--all"))
    assert [(r["name"], r["host"]) for r in only_b if r["name"].startswith(prefix)] == [(name, "b")]
    shown = js(kv("--json", "--host", "b", "vm", "show", name))
    assert shown["host"] == "b" and shown["state"] == "running"
    # lifecycle through --host
    kv("--host", "b", "vm", "destroy", name)
    assert hosts.conn("b").lookupByName(name).isActive() == 0
    # a host with VMs is not removed unless forced
    res = kv("host", "remove", "b", check=False)
    assert res.returncode == 1 and f"{name}" in res.stderr and "--force" in res.stderr
    kv("host", "remove", "b", "--force")
    assert name in hosts.names_on("b")  # forgetting a host leaves its VMs alone


def test_a_dead_host_is_reported_by_vm_list_while_the_others_list(kv: Run, hosts: Any, prefix: str) -> None:
    add_bed(kv, hosts, "a", "b", "c")
    hosts.guest("a", "alive", start=False)
    hosts["c"].link_down()  # its address stops answering: connections hang instead of failing
    hosts["b"].kill_libvirtd()  # its daemon is gone: connections are refused
    res = kv("--json", "vm", "list", "--all", "--host-timeout", "3")
    rows = json.loads(res.stdout)
    assert (f"{prefix}alive", "a") in {(r["name"], r["host"]) for r in rows}
    assert not {r["host"] for r in rows} & {"b", "c"}
    assert "warning: host b is left out: down" in res.stderr
    assert "warning: host c is left out" in res.stderr  # timeout (or down once the connect gave up)


def test_placement_picks_the_host_with_room_and_explains(kv: Run, hosts: Any, prefix: str) -> None:
    add_bed(kv, hosts, "a", "b", extra={"a": ["--max-memory", "300M"]})
    kv("host", "maintenance", "local", "on")  # the machine's own libvirtd carries other tests' VMs
    hosts.guest("a", "big", memory_mib=256)  # a is full: 300 MiB cap, 256 MiB running
    res = kv("--json", "vm", "create", f"{prefix}placed", "--micro", "--network", "none", "--memory", "128M")
    out = json.loads(res.stdout)
    assert out["host"] == "b" and f"{prefix}placed" in hosts.names_on("b")
    cands = {c["name"]: c for c in out["placement"]["candidates"]}
    assert not cands["local"]["ok"] and "maintenance" in cands["local"]["reason"]
    assert not cands["a"]["ok"] and "not enough memory" in cands["a"]["reason"]
    assert cands["b"]["ok"] and out["placement"]["reason"].startswith("host b:")
    # --explain in words (stderr), and maintenance takes b out as well: nothing fits, nothing is made
    kv("host", "maintenance", "b", "on")
    res = kv("vm", "create", f"{prefix}nowhere", "--micro", "--network", "none", "--memory", "128M", "--explain",
             check=False)
    assert res.returncode == 1
    assert "refused a: not enough memory" in " ".join(res.stderr.split())
    assert "no host can take VM" in res.stderr and "b: in maintenance" in res.stderr
    assert f"{prefix}nowhere" not in hosts.names_on("a") | hosts.names_on("b")
    kv("host", "maintenance", "b", "off")
    res = kv("vm", "create", f"{prefix}explained", "--micro", "--network", "none", "--memory", "128M", "--explain")
    assert "<- chosen" in res.stderr and "placed on host b" in res.stderr
