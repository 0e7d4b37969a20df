"""Migrations that fail leave the VM running on its host, defined there only: refused by a pre-check (the
destination lacks the VM's network), the destination's libvirtd or its QEMU killed mid-migration, a cancel.
Both hosts are asked after each (the destination after it is healed: libvirt removes an unfinished
incoming copy when its daemon starts again). --bandwidth slows the job so that there is time to act."""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import pytest
from lxml import etree

from kvmkit.service.migration.migrate import migrate_vm
from kvmkit.service.migration.model import MigrationFailed, MigrationRefused
from kvmkit.service.migration.precheck import plan_migration
from kvmkit.service.tasks.runner import Cancelled
from kvmkit.spec.migration import MigrateSpec
from tests.migration.conftest import defined_on, ends, guest

pytestmark = pytest.mark.guest
SLOW = 1  # MiB/s: the micro-guest's ~90 MiB of non-zero memory take more than a minute


def _network(hosts, letter: str, suffix: str = "net") -> str:
    """An isolated network (no addresses: no dnsmasq) PREFIX+suffix on host ``letter``."""
    name = f"{hosts.prefix}{suffix}"
    root = etree.Element("network")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "bridge", name=f"kb{hosts.prefix[3:9]}{suffix[:3]}")
    hosts.conn(letter).networkCreateXML(etree.tostring(root, encoding="unicode"))
    return name


class Running:
    """A migration in a thread; ``moving`` is set once data flows."""

    def __init__(self, inventory, src: str, dst: str, name: str, spec: MigrateSpec) -> None:
        self.moving = threading.Event()
        self.cancel = threading.Event()
        self.error: BaseException | None = None
        self.result: dict[str, Any] | None = None
        a, b = ends(inventory, src, dst)

        def progress(p: dict[str, Any]) -> None:
            if p.get("data_processed", 0) > 0:
                self.moving.set()

        def run() -> None:
            try:
                self.result = migrate_vm(a, b, name, spec, progress=progress, cancelled=self.cancel.is_set)
            except BaseException as err:
                self.error = err

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait(self, timeout: float = 180) -> BaseException | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the migration did not end"
        return self.error


def test_destination_without_the_network_is_refused(hosts, inventory) -> None:
    net = _network(hosts, "a")
    g = guest(hosts, "a", networks=[{"network": net}])
    src, dst = ends(inventory, "a", "b")
    with pytest.raises(MigrationRefused) as err:
        migrate_vm(src, dst, g.name, MigrateSpec(to="b"))
    assert f"network '{net}' does not exist on host b" in err.value.message
    assert f"net create {net}" in (err.value.hint or "")
    assert [c.name for c in err.value.plan.refused] == ["network"]
    assert defined_on(hosts, g.name) == {"a": (True, True)}
    _network(hosts, "b")  # the same network name on the destination: the check passes
    network = next(c for c in plan_migration(src, dst, g.name, MigrateSpec(to="b")).checks if c.name == "network")
    assert network.status == "pass" and f"network {net}" in network.detail


def test_destination_libvirtd_killed_mid_migration(hosts, inventory) -> None:
    g = guest(hosts, "a")
    before = g.log.text()
    job = Running(inventory, "a", "b", g.name, MigrateSpec(to="b", bandwidth_mib=SLOW))
    assert job.moving.wait(120), "the migration never started sending"
    hosts["b"].kill_libvirtd()
    err = job.wait()
    assert isinstance(err, MigrationFailed), repr(err)
    assert f"VM '{g.name}' is running on host a" in err.message
    assert err.where["source"]["state"] == "running"
    hosts["b"].heal()  # its libvirtd starts again and removes the unfinished incoming copy
    assert defined_on(hosts, g.name) == {"a": (True, True)}
    g.log.wait_status(timeout=60, after=len(g.log.text()))  # still running, the same boot
    assert g.log.text().startswith(before) and g.log.text().count("KVMKIT-GUEST-READY") == 1


def test_destination_qemu_killed_mid_migration(hosts, inventory) -> None:
    g = guest(hosts, "a")
    job = Running(inventory, "a", "b", g.name, MigrateSpec(to="b", bandwidth_mib=SLOW))
    assert job.moving.wait(120), "the migration never started sending"
    pid = int((hosts["b"].dir / "run" / "libvirt" / "qemu" / f"{g.name}.pid").read_text())
    assert pid in hosts["b"].pids()
    os.kill(pid, signal.SIGKILL)
    err = job.wait()
    assert isinstance(err, MigrationFailed), repr(err)
    assert "defined there only" in err.message
    assert defined_on(hosts, g.name) == {"a": (True, True)}
    g.log.wait_status(timeout=60, after=len(g.log.text()))


def test_cancel_aborts_the_job(hosts, inventory) -> None:
    g = guest(hosts, "a")
    job = Running(inventory, "a", "b", g.name, MigrateSpec(to="b", bandwidth_mib=SLOW))
    assert job.moving.wait(120), "the migration never started sending"
    job.cancel.set()
    err = job.wait()
    assert isinstance(err, Cancelled), repr(err)
    assert "cancelled" in err.message and "running on host a and defined there only" in err.message
    assert defined_on(hosts, g.name) == {"a": (True, True)}
