"""Scenario 4: snapshot create and revert of a running micro-guest, virsh vs kvmkit.

virsh, kvmkit cold and kvmkit warm take turns on one running guest with a qcow2 disk (internal
snapshots with memory need one), round by round, so the guest's state and the host's load are the same
for all three; with a guest per side run one after the other, the sides differed by more than kvmkit's
own cost. After each revert the harness reads the guest's next KVMKIT-STATUS line: its uptime must be at least
the uptime when the snapshot was taken and no new ready marker may appear, i.e. the guest resumed
where it was and did not boot again.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from pathlib import Path

import libvirt

from bench.common import KVMKIT, PREFIX, READY, Ctx, Row, Series, log, run, wait_for_text
from bench.guest import MicroXML
from bench.warm import COLD, cli_server

SCEN = "4. snapshot of a running guest"
STATUS = re.compile(rb"KVMKIT-STATUS uptime=([0-9.]+)")


def _text(path: Path) -> bytes:
    with contextlib.suppress(FileNotFoundError, PermissionError):
        return path.read_bytes()
    return b""


def _last_uptime(path: Path) -> float:
    found = STATUS.findall(_text(path))
    return float(found[-1]) if found else 0.0


def _next_status(path: Path, offset: int, timeout: float = 60.0) -> tuple[float, bool]:
    """(uptime of the first status line past ``offset``, whether a ready marker appeared there)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = _text(path)
        if len(data) < offset:  # the log was truncated when QEMU restarted
            offset = 0
        tail = data[offset:]
        m = STATUS.search(tail)
        if m:
            return float(m[1]), READY.encode() in tail[:m.start()]
        time.sleep(0.05)
    raise TimeoutError(f"no status line in {path} after the revert")


def _guest(ctx: Ctx, side: str) -> tuple[libvirt.virDomain, Path]:
    name = f"{PREFIX}snap-{side}"
    disk = ctx.path("snap", f"{name}.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "1G"])
    log_path = ctx.path("snap", f"{name}.serial.log")
    dom = ctx.conn.defineXML(MicroXML(name, ctx.kernel, ctx.initrd, ctx.cmdline, str(log_path),
                                      virt_type=ctx.virt_type, disks=[{"path": str(disk), "format": "qcow2"}]).xml())
    t0 = time.perf_counter()
    dom.create()
    wait_for_text(log_path, "KVMKIT-STATUS", t0, timeout=120)
    return dom, log_path


def repeats(ctx: Ctx) -> int:
    """At least 7 in a full run: the libvirt call itself varies by +-30 % here, and kvmkit and virsh are
    within a few ms of each other, so 3 samples would make "no slower" a coin toss."""
    return ctx.repeats if ctx.quick else max(ctx.repeats, 7)


Command = Callable[[str, str], list[str]]


def _rounds(ctx: Ctx, sides: dict[str, tuple[Command, Command, dict[str, str] | None]],
            ) -> dict[str, tuple[Series, Series, list[str]]]:
    """Every side snapshots and reverts the same running guest, round by round, the order of the sides
    rotated each round: the guest's memory, disk and the host's load are the same for all of them."""
    dom, log_path = _guest(ctx, "shared")
    out: dict[str, tuple[Series, Series, list[str]]] = {side: (Series(), Series(), []) for side in sides}
    order = list(sides)
    try:
        for i in range(repeats(ctx)):
            for side in order[i % len(order):] + order[:i % len(order)]:
                create, revert, env = sides[side]
                c, r, problems = out[side]
                snap = f"{side}{i}"
                time.sleep(2.5)  # a fresh status line
                uptime = _last_uptime(log_path)
                elapsed, _ = run(create(dom.name(), snap), timeout=300, env=env)
                c.samples.append(elapsed)
                time.sleep(4.5)  # the guest runs on past the snapshot
                offset = len(_text(log_path))
                elapsed, _ = run(revert(dom.name(), snap), timeout=300, env=env)
                r.samples.append(elapsed)
                if not dom.isActive():
                    problems.append(f"{side}: guest not running after revert {i}")
                    dom.create()
                after, ready = _next_status(log_path, offset)
                if ready or after + 0.5 < uptime:
                    problems.append(f"{side}: guest rebooted on revert {i} (uptime {uptime:.1f} s -> {after:.1f} s)")
                with contextlib.suppress(libvirt.libvirtError):
                    dom.snapshotLookupByName(snap).delete(0)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
        for s in dom.listAllSnapshots():
            with contextlib.suppress(libvirt.libvirtError):
                s.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
        dom.undefine()
    return out


def bench_snapshots(ctx: Ctx) -> list[Row]:
    virsh = ["virsh", "-c", "qemu:///system"]
    kvmkit_create: Command = lambda d, s: [KVMKIT, "snapshot", "create", d, s]  # noqa: E731
    kvmkit_revert: Command = lambda d, s: [KVMKIT, "snapshot", "revert", d, s]  # noqa: E731
    with cli_server() as warm_env:
        sides = _rounds(ctx, {"virsh": (lambda d, s: [*virsh, "snapshot-create-as", d, s],
                                        lambda d, s: [*virsh, "snapshot-revert", d, s], None),
                              "cold": (kvmkit_create, kvmkit_revert, COLD),
                              "warm": (kvmkit_create, kvmkit_revert, warm_env)})
    p_create, p_revert, p_problems = sides.pop("virsh")
    k_problems = [p for _c, _r, probs in sides.values() for p in probs]
    for problem in p_problems + k_problems:
        ctx.notes.append(f"4: {problem}")
    ctx.notes.append("4: guest did not reboot on any revert: "
                     f"virsh {'yes' if not p_problems else 'NO'}, kvmkit {'yes' if not k_problems else 'NO'} "
                     "(checked by the guest's uptime in its next status line)")
    ctx.notes.append("4: kvmkit cold = a new `kvmkit` process per command; warm = the same command through "
                     "`kvmkit cli-server` (a forked child of a process with everything imported); one guest for "
                     f"all three, {repeats(ctx)} rounds, the order of virsh, cold and warm rotated each round")
    log(f"snapshot: virsh create {p_create.samples} revert {p_revert.samples}; kvmkit "
        + "; ".join(f"{k} create {c.samples} revert {r.samples}" for k, (c, r, _p) in sides.items()))
    rows = []
    for how, (k_create, k_revert, _) in sides.items():
        for metric, peer_name, k, p in ((f"create (internal, with memory), kvmkit {how}",
                                         "virsh snapshot-create-as", k_create, p_create),
                                        (f"revert (guest keeps running), kvmkit {how}", "virsh snapshot-revert",
                                         k_revert, p_revert)):
            rows.append(Row(SCEN, "256 MiB guest, 1 GiB qcow2", metric, "s", kvmkit=k, peer=p,
                            peer_name=peer_name, target="no slower than virsh (reboots: see notes)",
                            met=lambda r: r.k() <= r.p()))
    return rows
