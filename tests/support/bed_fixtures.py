"""pytest fixtures of the many-hosts test bed (tests/support/testbed.py, docs/testbed.md).

``testbed`` (session): three bed hosts a, b, c built once per session on first use and torn down at its
end (host c does not see /dev/kvm). ``hosts`` (per test): the bed with every host healed before the test
(link up, libvirtd running) and, after it, every object named with the test's prefix removed from every
bed host, plus ``hosts.guest("b", "vm")`` to boot a micro-guest on a bed host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from tests.support.cleanup import sweep
from tests.support.micro_domain import MicroDomain
from tests.support.serial import SerialLog
from tests.support.testbed import BedHost, TestBed, create


class BedGuest:
    """A micro-guest on a bed host, with its serial log."""

    def __init__(self, host: BedHost, dom: libvirt.virDomain, log: SerialLog) -> None:
        self.host = host
        self.dom = dom
        self.log = log
        self.name = dom.name()


class Hosts:
    """The bed as one test sees it: ``hosts["b"]`` (a BedHost), ``hosts.conn("b")``, ``hosts.guest(...)``."""

    def __init__(self, bed: TestBed, prefix: str, workdir: Path, micro_image: Any) -> None:
        self.bed = bed
        self.prefix = prefix
        self.workdir = workdir
        self._image = micro_image
        self._conns: dict[str, libvirt.virConnect] = {}

    def __getitem__(self, letter: str) -> BedHost:
        return self.bed[letter]

    def __iter__(self) -> Iterator[BedHost]:
        return iter(self.bed)

    def conn(self, letter: str) -> libvirt.virConnect:
        """A connection to bed host ``letter`` (opened again when its libvirtd restarted)."""
        c = self._conns.get(letter)
        if c is not None:
            try:
                c.getLibVersion()
                return c
            except libvirt.libvirtError:
                with contextlib.suppress(libvirt.libvirtError):
                    c.close()
        c = self.bed[letter].connect()
        self._conns[letter] = c
        return c

    def guest(self, letter: str, suffix: str = "vm", *, start: bool = True, virt_type: str = "qemu",
              **kwargs: Any) -> BedGuest:
        """A micro-guest named PREFIX+SUFFIX defined (and started) on bed host ``letter``."""
        name = f"{self.prefix}{suffix}"
        log = self.workdir / f"{name}.serial.log"
        spec = MicroDomain(name=name, kernel=self._image.kernel, initrd=self._image.initrd,
                           cmdline=self._image.cmdline, serial_log=str(log), virt_type=virt_type, **kwargs)
        dom = self.conn(letter).defineXML(spec.xml())
        if start:
            dom.create()
        return BedGuest(self.bed[letter], dom, SerialLog(log))

    def names_on(self, letter: str) -> set[str]:
        return {d.name() for d in self.conn(letter).listAllDomains()}

    def cleanup(self) -> None:
        for host in self.bed:
            with contextlib.suppress(Exception):
                host.heal()
                sweep(self.conn(host.letter), self.prefix)
        for c in self._conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                c.close()
        self._conns.clear()


@pytest.fixture(scope="session")
def testbed() -> Iterator[TestBed]:
    bed = create(3)
    yield bed
    bed.teardown()


@pytest.fixture()
def hosts(testbed: TestBed, prefix: str, workdir: Path, micro_image: Any) -> Iterator[Hosts]:
    for host in testbed:
        host.heal()
    view = Hosts(testbed, prefix, workdir, micro_image)
    yield view
    view.cleanup()
