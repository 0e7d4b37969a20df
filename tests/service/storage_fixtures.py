"""Fixtures for storage tests: dir pools in the test's work directory, loop devices, template registries.

Import with ``from tests.service.storage_fixtures import *``. Everything made here is removed afterwards,
also when the test failed: pools are stopped and undefined, file systems unmounted, volume groups
removed, loop devices detached.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

from kvmkit.service.storage import pools
from tests.support.cleanup import stop_domains

__all__ = ["dir_pool", "loop_device", "make_dir_pool", "template_registry"]


def _quiet(fn, *args) -> None:
    with contextlib.suppress(libvirt.libvirtError, Exception):
        fn(*args)


def remove_pool(conn: libvirt.virConnect, name: str) -> None:
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError:
        return
    if pool.isActive():
        _quiet(pool.refresh, 0)
        for vol in pool.listAllVolumes(0):
            _quiet(vol.delete, 0)
        _quiet(pool.destroy)
    _quiet(pool.undefine)


@pytest.fixture()
def make_dir_pool(conn, prefix, workdir) -> Iterator[Callable[[str], str]]:
    """Factory: ``make_dir_pool("a")`` -> name of a running dir pool under the work directory."""
    made: list[str] = []

    def make(suffix: str = "pool") -> str:
        name = f"{prefix}{suffix}"
        pools.define_pool(conn, name, "dir", target=str(workdir / suffix))
        made.append(name)
        pools.build_pool(conn, name)
        pools.start_pool(conn, name)
        return name

    yield make
    if made:
        stop_domains(conn, prefix)  # before their volumes go (see tests.support.cleanup.stop_domains)
    for name in made:
        remove_pool(conn, name)


@pytest.fixture()
def dir_pool(make_dir_pool) -> str:
    return make_dir_pool("pool")


@pytest.fixture()
def loop_device(conn, prefix, workdir) -> Iterator[Callable[[int], str]]:
    """Factory: ``loop_device(64)`` -> /dev/loopN backed by a 64 MiB file; detached (and unmounted) after."""
    devices: list[str] = []

    def make(size_mib: int = 64) -> str:
        backing = workdir / f"loop{len(devices)}.img"
        with backing.open("wb") as fh:
            fh.truncate(size_mib * 1024 * 1024)
        dev = subprocess.run(["losetup", "-f", "--show", str(backing)], check=True, capture_output=True,
                             text=True).stdout.strip()
        devices.append(dev)
        return dev

    yield make
    if devices:
        stop_domains(conn, prefix)  # before the storage under their disks goes
    for dev in devices:
        with open("/proc/self/mounts") as fh:
            for line in fh:
                if line.split()[0] == dev:
                    subprocess.run(["umount", "-l", line.split()[1]], capture_output=True, check=False)
        subprocess.run(["pvremove", "-ff", "-y", dev], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False)


@pytest.fixture()
def template_registry(workdir, monkeypatch) -> Path:
    """Point kvmkit's data directory (the template registry) at the test's work directory."""
    data = workdir / "data"
    data.mkdir()
    monkeypatch.setenv("KVMKIT_DATA_DIR", str(data))
    return data / "templates.json"


def remove_vg(name: str) -> None:
    subprocess.run(["vgremove", "-f", name], capture_output=True, check=False)
