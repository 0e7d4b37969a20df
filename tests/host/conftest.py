"""Fixtures for host-tuning tests: each saves the host settings a test may change and puts them back."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvmkit.host import ksm, profiles, sysfs

PROFILE_KEYS = ("vm.dirty_ratio", "vm.dirty_background_ratio", "vm.swappiness", "kernel.sched_migration_cost_ns",
                "kernel.sched_min_granularity_ns", "kernel.sched_wakeup_granularity_ns")


@pytest.fixture()
def ksm_saved() -> Iterator[dict[str, int]]:
    """KSM run/sleep_millisecs/pages_to_scan as before the test, restored afterwards."""
    saved = ksm.settings()
    yield saved
    if sysfs.read_int(sysfs.KSM_DIR / "run") == 1 and saved["run"] != 1:
        ksm.configure(run=2)  # do not leave pages merged by the test behind
    ksm.restore(saved)
    assert ksm.settings() == saved


@pytest.fixture()
def hugepages_saved() -> Iterator[int]:
    """nr_hugepages of the 2 MiB pool as before the test, restored afterwards."""
    path = sysfs.HUGEPAGES_DIR / "hugepages-2048kB" / "nr_hugepages"
    before = sysfs.read_int(path)
    yield before
    if sysfs.read_int(path) != before:
        sysfs.write(path, before)
    assert sysfs.read_int(path) == before


def tunable_paths() -> list[Path]:
    paths = [sysfs.sysctl_path(k) for k in PROFILE_KEYS] + [sysfs.THP_DIR / "enabled"]
    return [p for p in paths if p.exists()]


def snapshot() -> dict[str, str]:
    return {str(p): sysfs.current(p) for p in tunable_paths()}


@pytest.fixture()
def tunables_saved() -> Iterator[dict[str, str]]:
    """Every sysctl/sysfs value the built-in profiles touch, restored (and any applied profile rolled back)."""
    before = snapshot()
    if profiles.applied():
        pytest.fail(f"a profile is applied on this host already: {profiles.applied()}; roll it back first")
    yield before
    if profiles.applied():
        profiles.rollback()
    for path, value in before.items():
        if sysfs.current(path) != value:
            sysfs.write(path, value)
    assert snapshot() == before


@pytest.fixture()
def loop_device(workdir: Path) -> Iterator[str]:
    """A 16 MiB loop block device (e.g. 'loop3') for IO scheduler tests, detached afterwards."""
    backing = workdir / "loop.img"
    with open(backing, "wb") as fh:
        fh.truncate(16 * 1024 * 1024)
    dev = subprocess.run(["losetup", "--find", "--show", str(backing)], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        yield Path(dev).name
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)
