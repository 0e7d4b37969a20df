"""Fixtures of the migration tests, on the many-hosts test bed (tests/support/testbed.py, docs/testbed.md).

``inventory``: a kvmkit host inventory (its own SQLite database in the test's workdir) holding bed hosts a, b
and c, with the local host (the machine's shared libvirtd, qemu:///system) and host c in maintenance, so that
placement never moves a test VM there: the local daemon belongs to every helper's tests, and host c's private
/dev gives QEMU no working pty (a guest with a serial console cannot start there; the bed's, not kvmkit's).
``local_dirs(path)``: ``path`` is a different directory on each of hosts a and b (a bind mount in each host's
own mount namespace): storage the hosts do not share, at the same path, as copy-storage needs it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmkit.hosts.pool import HostPool
from kvmkit.hosts.registry import Hosts
from kvmkit.service.migration.model import Endpoint
from kvmkit.service.migration.precheck import endpoints
from kvmkit.spec.host import HostSpec
from kvmkit.xml.migration import dir_pool_xml, volume_xml
from tests.support.bed_fixtures import BedGuest
from tests.support.bed_fixtures import Hosts as BedHosts


@pytest.fixture()
def inventory(hosts: BedHosts, workdir: Path) -> Iterator[Hosts]:
    from kvmkit.service.hosts.manage import add_host, set_maintenance
    from kvmkit.store.db import Store

    db = f"sqlite:///{workdir}/kvmkit.db"
    reg = Hosts(Store(db), HostPool("qemu:///system"))
    for host in hosts:
        add_host(reg, HostSpec(name=host.letter, uri=host.uri), check=False)
    set_maintenance(reg, "local", True)
    set_maintenance(reg, "c", True)
    reg.db_url = db  # type: ignore[attr-defined]
    yield reg
    reg.pool.close()


def ends(inventory: Hosts, src: str, dst: str) -> tuple[Endpoint, Endpoint]:
    return endpoints(inventory, src, dst)


@pytest.fixture()
def local_dirs(hosts: BedHosts) -> Iterator[Callable[[str], str]]:
    """``make(name)``: a path that is a different directory on hosts a and b (each host's own files)."""
    mounted: list[tuple[str, str]] = []

    def make(name: str) -> str:
        path = str(hosts.workdir / name)
        os.makedirs(path, exist_ok=True)
        for letter in ("a", "b"):
            own = hosts[letter].dir / f"{hosts.prefix}{name}"
            own.mkdir(parents=True, exist_ok=True)
            hosts[letter].run("mount", "--bind", str(own), path)
            mounted.append((letter, path))
        return path

    yield make
    for letter, path in mounted:
        with contextlib.suppress(Exception):
            hosts[letter].run("umount", "-l", path)
        shutil.rmtree(hosts[letter].dir / f"{hosts.prefix}{os.path.basename(path)}", ignore_errors=True)


def own_files(hosts: BedHosts, letter: str, name: str) -> list[str]:
    """What host ``letter`` has in its own directory behind ``local_dirs(name)``."""
    own = hosts[letter].dir / f"{hosts.prefix}{name}"
    return sorted(os.listdir(own)) if own.exists() else []


def dir_pool(hosts: BedHosts, letter: str, path: str, suffix: str = "pool") -> Any:
    """A running transient dir pool PREFIX+suffix at ``path`` on bed host ``letter``."""
    return hosts.conn(letter).storagePoolCreateXML(dir_pool_xml(f"{hosts.prefix}{suffix}", path), 0)


def qcow2(pool: Any, name: str, mib: int = 64) -> str:
    return str(pool.createXML(volume_xml(name, mib * 2**20, "qcow2"), 0).path())


def guest(hosts: BedHosts, letter: str, suffix: str = "vm", **kwargs: Any) -> BedGuest:
    """A running 128 MiB micro-guest on host ``letter`` (serial log in the test's workdir: shared by every
    bed host, with append='off' as tests/support/micro_domain.py writes it), booted."""
    kwargs.setdefault("memory_mib", 128)
    g = hosts.guest(letter, suffix, **kwargs)
    g.log.wait_for("KVMKIT-GUEST-READY", timeout=180)
    g.log.wait_status(timeout=60)
    return g


def defined_on(hosts: BedHosts, name: str) -> dict[str, tuple[bool, bool]]:
    """Host letter -> (running, persistent) for every bed host that has the domain."""
    out = {}
    for host in hosts:
        for dom in hosts.conn(host.letter).listAllDomains(0):
            if dom.name() == name:
                out[host.letter] = (bool(dom.isActive()), bool(dom.isPersistent()))
    return out
