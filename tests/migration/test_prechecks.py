"""The pre-checks against the bed's real daemons, each refusal naming its cause and its fix: the guest's CPU
(compared with what the destination's QEMU offers), machine and guest type (host c has no KVM), the clock
(the bed's hosts share one kernel clock: a skew is simulated with KVMKIT_TEST_CLOCK_OFFSET, and the real
measurement is checked to be near zero), memory (an inventory cap), the VM's state and name; plus an offline
move with its disk streamed across, and the CPU baseline over the bed's hosts."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

import pytest
from lxml import etree

from kvmkit.service.hosts.manage import set_limits, set_maintenance
from kvmkit.service.migration.cpu_baseline import cpu_baseline
from kvmkit.service.migration.migrate import migrate_vm
from kvmkit.service.migration.model import MigrationRefused
from kvmkit.service.migration.precheck import plan_migration
from kvmkit.spec.host import HostLimits
from kvmkit.spec.migration import MigrateSpec
from tests.migration.conftest import defined_on, dir_pool, ends, guest, own_files
from tests.support.cli_run import KVMKIT
from tests.support.micro_domain import MicroDomain
from tests.support.serial import SerialLog

pytestmark = pytest.mark.guest


def _define(hosts, letter: str, suffix: str, *, cpu: str | None = None, virt_type: str = "qemu",
            disks: list[dict[str, str]] | None = None):
    """A shut-off micro-guest PREFIX+suffix on host ``letter`` (optionally with a <cpu> element)."""
    img = hosts._image
    spec = MicroDomain(name=f"{hosts.prefix}{suffix}", kernel=img.kernel, initrd=img.initrd, cmdline=img.cmdline,
                       serial_log=str(hosts.workdir / f"{hosts.prefix}{suffix}.serial.log"), virt_type=virt_type,
                       memory_mib=128, disks=disks or [])
    root = etree.fromstring(spec.xml().encode())
    if cpu is not None:
        root.find("features").addnext(etree.fromstring(cpu))
    return hosts.conn(letter).defineXML(etree.tostring(root, encoding="unicode"))


def _check(plan, name: str):
    return next(c for c in plan.checks if c.name == name)


def test_a_cpu_the_destination_lacks_is_refused(hosts, inventory) -> None:
    cpu = ("<cpu mode='custom' match='exact'><model fallback='forbid'>qemu64</model>"
           "<feature policy='require' name='avx512f'/></cpu>")  # TCG emulates no AVX-512
    dom = _define(hosts, "a", "cpu", cpu=cpu)
    src, dst = ends(inventory, "a", "b")
    with pytest.raises(MigrationRefused) as err:
        migrate_vm(src, dst, dom.name(), MigrateSpec(to="b"))
    check = _check(err.value.plan, "cpu")
    assert check.status == "fail" and "avx512f" in check.detail and "qemu64 + avx512f" in check.detail
    assert "kvmkit host cpu-baseline" in (check.fix or "") and "--cpu MODEL" in (check.fix or "")
    assert defined_on(hosts, dom.name()) == {"a": (False, True)}
    ok = _define(hosts, "a", "cpu2", cpu="<cpu mode='custom' match='exact'><model>qemu64</model></cpu>")
    assert _check(plan_migration(src, dst, ok.name(), MigrateSpec(to="b")), "cpu").status == "pass"


def test_a_guest_type_the_destination_lacks_is_refused(hosts, inventory) -> None:
    set_maintenance(inventory, "c", False)
    dom = _define(hosts, "a", "kvm", virt_type="kvm")  # host a sees /dev/kvm; host c does not
    src, dst = ends(inventory, "a", "c")
    plan = plan_migration(src, dst, dom.name(), MigrateSpec(to="c"))
    machine = _check(plan, "machine")
    assert machine.status == "fail" and "as a kvm guest" in machine.detail and "kvm" in (machine.fix or "")
    assert _check(plan, "state").status == "pass" and plan.mode == "offline"


def _skew(text: str) -> tuple[float, float]:
    """(skew, uncertainty) from a clock check's text: "host b's clock is +100.012 s from host a's (±0.034 s)"."""
    found = re.search(r"clock is ([+-][0-9.]+) s from host \w+'s \(±([0-9.]+) s\)", text)
    assert found, text
    return float(found.group(1)), float(found.group(2))


def test_clock_skew_over_the_limit_is_refused(hosts, inventory, monkeypatch) -> None:
    # The bed's hosts share one kernel clock, so their true skew is 0, and a measurement is only as good as
    # its round trips: asserted is that 0 lies inside the interval the check reports (however loaded the
    # machine is), never that the round trips were short.
    dom = _define(hosts, "a", "clock")
    src, dst = ends(inventory, "a", "b")
    plan = plan_migration(src, dst, dom.name(), MigrateSpec(to="b"))
    clock = _check(plan, "clock")
    assert clock.status == "pass"
    skew, error = _skew(clock.detail)
    assert plan.clock_skew_s is not None and abs(plan.clock_skew_s - skew) < 0.001
    assert abs(skew) <= error + 0.001  # 0.001: the text's rounding

    monkeypatch.setenv("KVMKIT_TEST_CLOCK_OFFSET", "b=100")  # host b's clock 100 s ahead (test hook)
    with pytest.raises(MigrationRefused) as err:
        migrate_vm(src, dst, dom.name(), MigrateSpec(to="b"))
    clock = _check(err.value.plan, "clock")
    skew, error = _skew(clock.detail)
    assert clock.status == "fail" and abs(skew - 100) <= error + 0.001 and "limit 1 s" in clock.detail
    assert "synchronise the hosts' clocks" in (clock.fix or "")
    env = {**os.environ, "KVMKIT_DB": inventory.db_url, "KVMKIT_NO_WARM": "1"}  # the CLI says the same
    cli = subprocess.run([KVMKIT, "--host", "a", "vm", "migrate", dom.name(), "--to", "b"], capture_output=True,
                         text=True, env=env, timeout=600)
    assert cli.returncode == 1 and "error: " in cli.stderr and "clock: host b's clock is +" in cli.stderr
    skew, error = _skew(cli.stderr)
    assert abs(skew - 100) <= error + 0.001
    assert "hint: synchronise the hosts' clocks" in cli.stderr
    check = subprocess.run([KVMKIT, "--host", "a", "vm", "migrate", dom.name(), "--to", "b", "--check"],
                           capture_output=True, text=True, env=env, timeout=600)
    assert check.returncode == 1 and "FAIL  clock" in check.stdout and "refused" in check.stdout
    monkeypatch.setenv("KVMKIT_MIGRATE_MAX_CLOCK_SKEW", "1000")
    assert _check(plan_migration(src, dst, dom.name(), MigrateSpec(to="b")), "clock").status == "pass"
    assert defined_on(hosts, dom.name()) == {"a": (False, True)}


def test_memory_state_and_name(hosts, inventory) -> None:
    g = guest(hosts, "a")
    src, dst = ends(inventory, "a", "b")
    set_limits(inventory, "b", HostLimits(max_memory="64M"))
    src, dst = ends(inventory, "a", "b")  # the inventory's limits as they are now
    with pytest.raises(MigrationRefused) as err:
        migrate_vm(src, dst, g.name, MigrateSpec(to="b"))
    memory = _check(err.value.plan, "memory")
    assert memory.status == "fail" and "needs 128 MiB" in memory.detail and "kvmkit host set b" in (memory.fix or "")
    set_limits(inventory, "b", HostLimits(max_memory="0"))
    src, dst = ends(inventory, "a", "b")
    state = _check(plan_migration(src, dst, g.name, MigrateSpec(to="b", mode="offline")), "state")
    assert state.status == "fail" and "shut it down first" in (state.fix or "")
    _define(hosts, "b", "vm")  # a VM of the same name on the destination
    state = _check(plan_migration(src, dst, g.name, MigrateSpec(to="b")), "state")
    assert state.status == "fail" and "has a VM named" in state.detail
    assert defined_on(hosts, g.name) == {"a": (True, True), "b": (False, True)}


def test_offline_with_the_disk_streamed_across(hosts, inventory, local_dirs) -> None:
    where = local_dirs("disks")
    name = f"{hosts.prefix}vda.qcow2"
    own_a = hosts["a"].dir / f"{hosts.prefix}disks"
    raw = own_a / "data.raw"
    raw.write_bytes(os.urandom(2**20) + b"\0" * (8 * 2**20) + b"kvmkit" * 1000)  # data, a hole, data
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(own_a / name)],
                   check=True)
    raw.unlink()
    digest = hashlib.sha256((own_a / name).read_bytes()).hexdigest()
    dir_pool(hosts, "a", where)
    dir_pool(hosts, "b", where)
    dom = _define(hosts, "a", "off", disks=[{"path": f"{where}/{name}", "format": "qcow2"}])
    src, dst = ends(inventory, "a", "b")
    seen: list[dict] = []
    res = migrate_vm(src, dst, dom.name(), MigrateSpec(to="b", copy_storage=True), progress=seen.append)
    assert res["mode"] == "offline" and "OFFLINE" in res["flags"] and res["source_volumes_removed"]
    assert any(p.get("phase") == "copying" for p in seen)
    assert own_files(hosts, "a", "disks") == [] and own_files(hosts, "b", "disks") == [name]
    assert hashlib.sha256((hosts["b"].dir / f"{hosts.prefix}disks" / name).read_bytes()).hexdigest() == digest
    assert defined_on(hosts, dom.name()) == {"b": (False, True)}
    moved = hosts.conn("b").lookupByName(dom.name())
    moved.create()  # it boots there
    SerialLog(hosts.workdir / f"{hosts.prefix}off.serial.log").wait_for("KVMKIT-GUEST-READY", timeout=180)


def test_cpu_baseline_over_the_bed(hosts, inventory) -> None:
    set_maintenance(inventory, "c", False)
    res = cpu_baseline(inventory, names=["a", "b", "c"], virt_type="qemu")
    assert res["hosts"] == ["a", "b", "c"] and res["model"] and res["recommended"]
    assert res["create_option"] == f"--cpu {res['recommended']}"
    # the recommended model, as a bare model, is what every host's qemu guests can have
    cpu = f"<cpu mode='custom' match='exact'><model fallback='forbid'>{res['recommended']}</model></cpu>"
    for letter in ("a", "b", "c"):
        assert hosts.conn(letter).compareHypervisorCPU(None, "x86_64", None, "qemu", cpu, 0) > 0
