"""Shared fixtures: real libvirt connections, unique object names, guaranteed clean-up, the micro-guest.

Tests touch only objects whose names start with their own prefix (``kt-<random>-``); every fixture that
creates something removes it afterwards, also when the test failed. If qemu:///system cannot be reached
the whole run fails (it never skips), and under CI=true any skipped test fails the run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from kvmkit.hypervisor.connection import connect, wait_for
from tests.support import test_driver
from tests.support.cleanup import stop_domains, sweep
from tests.support.micro_domain import MicroDomain
from tests.support.serial import SerialLog

pytest_plugins = ["tests.support.bed_fixtures"]  # testbed, hosts: the many-hosts bed (docs/testbed.md)

SYSTEM_URI = "qemu:///system"
TEST_ROOT = Path(os.environ.get("KVMKIT_TEST_DIR", "/var/lib/kvmkit/test"))
# every answer the tests see (in-process apps and the servers they start) is checked against its declared
# model: a field the service returns and the model lacks is a 500 naming both (kvmkit/api/models/base.py)
os.environ.setdefault("KVMKIT_STRICT_RESPONSES", "1")


def pytest_sessionstart(session: pytest.Session) -> None:
    try:
        connect(SYSTEM_URI).close()
    except Exception as err:
        pytest.exit(f"qemu:///system is not reachable, refusing to run: {err} "
                    "(run scripts/setup.sh to install and start libvirtd)", returncode=3)
    test_driver.record_defaults()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and os.environ.get("CI") == "true" and session.exitstatus == 0:
        reporter.write_line(f"FAILED: {skipped} test(s) skipped under CI=true; a skip is a failure in CI", red=True)
        session.exitstatus = 1


_live: dict[str, libvirt.virConnect] = {}


def live_conn() -> libvirt.virConnect:
    """The shared qemu:///system connection, opened again when libvirtd restarted since it was last used
    (an operator, another program or a test that restarts it on purpose): one dead daemon connection must
    not fail every test after it."""
    c = _live.get(SYSTEM_URI)
    if c is not None:
        try:
            c.getLibVersion()  # a round trip: isAlive() does not notice a restarted daemon
            return c
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                c.close()
    c = wait_for(SYSTEM_URI, timeout=60)
    _live[SYSTEM_URI] = c
    return c


@pytest.fixture()
def conn() -> libvirt.virConnect:
    return live_conn()


@pytest.fixture()
def test_conn() -> Iterator[libvirt.virConnect]:
    """libvirt's in-memory test driver in its default state, for fast API-shape tests."""
    c = connect(test_driver.URI)
    test_driver.reset(c)
    yield c
    test_driver.reset(c)  # what the test defined, gone with it
    c.close()


@pytest.fixture()
def prefix(conn: libvirt.virConnect) -> Iterator[str]:
    """A unique name prefix for this test; everything carrying it is removed afterwards."""
    p = f"kt-{secrets.token_hex(3)}-"
    yield p
    sweep(live_conn(), p)


@pytest.fixture()
def workdir(prefix: str) -> Iterator[Path]:
    """A directory for this test's files (serial logs, disks outside pools), removed afterwards: after the
    test's VMs are stopped (see tests.support.cleanup.stop_domains)."""
    path = TEST_ROOT / prefix.rstrip("-")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o755)
    yield path
    stop_domains(live_conn(), prefix)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def micro_image():
    from kvmkit.images import micro

    return micro.build()


@pytest.fixture(scope="session")
def virt_type() -> str:
    from kvmkit.host.virt_type import choose_virt_type

    return choose_virt_type()[0]


class Guest:
    """A running (or defined) micro-guest with its serial log."""

    def __init__(self, dom: libvirt.virDomain, log: SerialLog) -> None:
        self.dom = dom
        self.log = log
        self.name = dom.name()


@pytest.fixture()
def micro_guest(prefix, workdir, micro_image, virt_type) -> Callable[..., Guest]:
    """Factory: ``micro_guest("a", vcpus=1, networks=[{"network": "default"}], start=True)``."""

    def make(suffix: str = "vm", *, start: bool = True, **kwargs) -> Guest:
        name = f"{prefix}{suffix}"
        log = workdir / f"{name}.serial.log"
        spec = MicroDomain(name=name, kernel=micro_image.kernel, initrd=micro_image.initrd,
                           cmdline=micro_image.cmdline, serial_log=str(log), virt_type=virt_type, **kwargs)
        dom = live_conn().defineXML(spec.xml())  # live: a test may restart libvirtd before making one
        if start:
            dom.create()
        return Guest(dom, SerialLog(log))

    return make
