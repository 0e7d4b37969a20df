"""The lean `vm list --json` path prints exactly what the Typer path prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import libvirt
import pytest

from kvmkit.cli import lean_libvirt
from kvmkit.cli.fastpath import parse, try_run
from kvmkit.service.vms import rows as vm_rows


def _list(*flags: str, fast: bool) -> list[dict]:
    env = {**os.environ, **({} if fast else {"KVMKIT_NO_FASTPATH": "1"})}
    out = subprocess.run([sys.executable, "-m", "kvmkit", "vm", "list", *flags, "--json"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def listed(micro_image, virt_type):
    """A shut-off and a running guest (with a DHCP lease), shared by the three flag sets: the test only lists
    them, so booting them once instead of three times changes nothing it proves."""
    import secrets
    import shutil

    from tests.conftest import TEST_ROOT, Guest, live_conn
    from tests.support.cleanup import sweep
    from tests.support.micro_domain import MicroDomain
    from tests.support.serial import SerialLog

    prefix = f"kt-{secrets.token_hex(3)}-"
    workdir = TEST_ROOT / prefix.rstrip("-")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)

    def make(suffix: str, start: bool, **kwargs) -> Guest:
        name = f"{prefix}{suffix}"
        log = workdir / f"{name}.serial.log"
        spec = MicroDomain(name=name, kernel=micro_image.kernel, initrd=micro_image.initrd,
                           cmdline=micro_image.cmdline, serial_log=str(log), virt_type=virt_type, **kwargs)
        dom = live_conn().defineXML(spec.xml())
        if start:
            dom.create()
        return Guest(dom, SerialLog(log))

    try:
        yield prefix, make("fp", False), make("fpr", True, networks=[{"network": "default"}])
    finally:
        sweep(live_conn(), prefix)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.guest
@pytest.mark.parametrize("flags", [(), ("--all",), ("--all", "--no-ip")])
def test_fast_and_typer_paths_agree(listed, flags):
    prefix, stopped, running = listed
    running.log.wait_for("KVMKIT-IP", timeout=180)
    deadline = time.monotonic() + 120  # a guard: libvirt records the lease within a second of the bind
    while True:  # libvirt records the lease a moment after the guest's DHCP bind
        fast = _list(*flags, fast=True)
        ip = next(r.get("ip") for r in fast if r["name"] == running.name)
        if ip or "--no-ip" in flags or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert ("--no-ip" in flags) == (ip is None)
    mine = lambda rows: [r for r in rows if r["name"].startswith(prefix)]  # noqa: E731 (others come and go)
    assert mine(fast) == mine(_list(*flags, fast=False))
    names = {r["name"] for r in mine(fast)}
    assert (stopped.name in names) == ("--all" in flags)
    assert running.name in names


@pytest.mark.fast
def test_parse_serves_only_the_exact_shape():
    assert parse(["vm", "list", "--json"]) == ("qemu:///system", set()) or os.environ.get("KVMKIT_CONNECT")
    assert parse(["--json", "vm", "list", "--all", "--connect", "test:///default"]) == ("test:///default", {"--all"})
    assert parse(["--connect=test:///default", "vm", "list", "--no-ip", "--json"]) == ("test:///default", {"--no-ip"})
    for argv in (["vm", "list"], ["vm", "list", "--json", "--bogus"], ["vm", "list", "--json", "--help"],
                 ["vm", "show", "x", "--json"], ["vm", "list", "--json", "--ip", "--no-ip"],
                 ["vm", "list", "--json", "--all", "--all"], ["--json"], []):
        assert parse(argv) is None, argv


@pytest.mark.fast
def test_libvirt_errors_fall_back_to_the_normal_path():
    # an unreachable URI: the lean path gives up silently and Typer's path reports the error
    assert not try_run(["vm", "list", "--json", "--connect", "qemu+unix:///system?socket=/nonexistent"])
    out = subprocess.run([sys.executable, "-m", "kvmkit", "--json", "vm", "list", "--connect",
                          "qemu+unix:///system?socket=/nonexistent"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "cannot connect" in out.stderr


@pytest.mark.fast
def test_lean_numbers_are_libvirts():
    assert vm_rows.STATES == {
        libvirt.VIR_DOMAIN_NOSTATE: "nostate", libvirt.VIR_DOMAIN_RUNNING: "running",
        libvirt.VIR_DOMAIN_BLOCKED: "blocked", libvirt.VIR_DOMAIN_PAUSED: "paused",
        libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down", libvirt.VIR_DOMAIN_SHUTOFF: "shut-off",
        libvirt.VIR_DOMAIN_CRASHED: "crashed", libvirt.VIR_DOMAIN_PMSUSPENDED: "pm-suspended"}
    assert vm_rows.RUNNING == libvirt.VIR_DOMAIN_RUNNING
    assert vm_rows.LIST_STATS == (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_BALLOON
                                  | libvirt.VIR_DOMAIN_STATS_VCPU)
    assert vm_rows.STATS_ACTIVE_ONLY == libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    assert lean_libvirt.LIST_NETWORKS_ACTIVE == libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE
    assert lean_libvirt.IP_ADDR_TYPE_IPV4 == libvirt.VIR_IP_ADDR_TYPE_IPV4


@pytest.mark.fast
def test_lean_list_on_the_test_driver_matches_the_library(test_conn):
    from kvmkit.service.vms.query import list_vms

    out = subprocess.run([sys.executable, "-m", "kvmkit", "--json", "vm", "list", "--all",
                          "--connect", "test:///default"], capture_output=True, text=True, timeout=60, check=True)
    # test:///default is private to each process (other tests here may have defined more): compare the
    # default domain "test", which both processes have
    rows = json.loads(out.stdout)
    assert [r["name"] for r in rows] == ["test"]
    mine = next(r for r in list_vms(test_conn, ips=True, host="local") if r["name"] == "test")
    assert rows[0].keys() == mine.keys()
    assert (rows[0]["uuid"], rows[0]["host"]) == (mine["uuid"], mine["host"])  # its state may differ here
