"""How far apart two hosts' clocks are, measured through libvirt alone.

libvirt has no call that returns a host's time (virConnectGetSysinfo carries SMBIOS tables, virNodeGetInfo
sizes; the time of a guest needs its agent). What it does return is file timestamps: the volume XML of a
storage pool gives a file's ctime, which the host's kernel sets from its own clock when the file is made.
So kvmkit reads a host's clock by creating an empty file there: a ``dir`` pool on
``/run/kvmkit/clock-RANDOM`` (``/run`` is a tmpfs: always that host's own kernel, never a network filesystem
whose server would stamp the time), one empty volume, its ctime read back, then the volume, the directory
and the pool removed again. The host's offset from this process's clock is ``ctime - midpoint`` of the
create call, give or take half its round trip plus the timestamp's granularity (the kernel's coarse clock,
a few ms); the difference of two hosts' offsets is their skew, with the sum of both uncertainties.

Test hook: ``KVMKIT_TEST_CLOCK_OFFSET="b=5,c=-2"`` adds seconds to what is measured for the named hosts
(the test bed's hosts share one kernel clock, so a skew can only be simulated there).
Limit: ``KVMKIT_MIGRATE_MAX_CLOCK_SKEW`` seconds (default 1).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal

import libvirt

from kvmkit.errors import InvalidInput
from kvmkit.xml.migration import dir_pool_xml, volume_facts, volume_xml

DEFAULT_LIMIT_S = 1.0
GRANULARITY_S = 0.01  # the kernel's coarse clock behind file timestamps (one jiffy at HZ=100)
CLOCK_DIR = "/run/kvmkit"


@dataclass
class ClockReading:
    host: str
    offset_s: float  # the host's clock minus this process's
    uncertainty_s: float
    simulated_s: float = 0.0


def limit_s() -> float:
    value = os.environ.get("KVMKIT_MIGRATE_MAX_CLOCK_SKEW")
    if not value:
        return DEFAULT_LIMIT_S
    try:
        limit = float(value)
    except ValueError as err:
        raise InvalidInput(f"KVMKIT_MIGRATE_MAX_CLOCK_SKEW={value!r} is not a number of seconds",
                           hint="e.g. 1 or 0.5") from err
    if limit <= 0:
        raise InvalidInput(f"KVMKIT_MIGRATE_MAX_CLOCK_SKEW={value!r} must be > 0", hint="e.g. 1")
    return limit


def _simulated(host: str) -> float:
    spec = os.environ.get("KVMKIT_TEST_CLOCK_OFFSET", "")
    for item in spec.split(","):
        name, _, seconds = item.partition("=")
        if name.strip() == host and seconds.strip():
            return float(seconds)
    return 0.0


def read_clock(conn: libvirt.virConnect, host: str) -> ClockReading:
    """The clock of the host ``conn`` talks to, relative to ours (libvirt errors propagate)."""
    name = f"kvmkit-clock-{secrets.token_hex(4)}"
    pool = conn.storagePoolDefineXML(dir_pool_xml(name, f"{CLOCK_DIR}/{name}"), 0)
    try:
        pool.build(0)  # mkdir (with /run/kvmkit)
        try:
            pool.create(0)
            try:
                t0 = time.time()
                vol = pool.createXML(volume_xml("now", 0, "raw"), 0)
                t1 = time.time()
                ctime = volume_facts(vol.XMLDesc(0))["ctime"]
                with contextlib.suppress(libvirt.libvirtError):
                    vol.delete(0)
            finally:
                with contextlib.suppress(libvirt.libvirtError):
                    pool.destroy()
        finally:
            with contextlib.suppress(libvirt.libvirtError):
                pool.delete(0)  # rmdir
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            pool.undefine()
    if not ctime:
        raise libvirt.libvirtError(f"host {host}: libvirt gave no file timestamps")
    sim = _simulated(host)
    offset = float(Decimal(ctime) - Decimal(repr((t0 + t1) / 2))) + sim
    return ClockReading(host, offset, (t1 - t0) / 2 + GRANULARITY_S, sim)


def skew(source: ClockReading, dest: ClockReading) -> tuple[float, float]:
    """(destination minus source in seconds, uncertainty)."""
    return dest.offset_s - source.offset_s, source.uncertainty_s + dest.uncertainty_s
