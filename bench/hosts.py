"""Scenario 8: ``vm list`` over three hosts beside the same list of one host (target: at most 1.5x).

The hosts are the test bed's (tests/support/testbed.py: two libvirtds in their own namespaces on this
machine, reached over qemu+tcp) plus the machine's own libvirtd; each gets ``count`` shell domains. Measured
as a user runs it: ``kvmkit --json vm list --all`` in a new process (the inventory names the bed hosts, so
the list spans the three) beside ``kvmkit --json --host a vm list --all`` (one of them, the same code path),
and GET /api/v1/vms beside GET /api/v1/vms?host=a on a kept-alive connection to ``kvmkit serve``.
"""

from __future__ import annotations

import contextlib
import time

import libvirt

from bench.common import KVMKIT, PREFIX, Ctx, Row, Series, log, run
from bench.guest import shell_domain_xml
from bench.server import Server
from bench.warm import COLD

SCEN = "10. vm list over three hosts"


def _define(conn: libvirt.virConnect, count: int, virt_type: str) -> list[str]:
    names = [f"{PREFIX}hosts-{i:04d}" for i in range(count)]
    for name in names:
        conn.defineXML(shell_domain_xml(name, virt_type))
    return names


def _undefine(conn: libvirt.virConnect, names: list[str]) -> None:
    for name in names:
        with contextlib.suppress(libvirt.libvirtError):
            conn.lookupByName(name).undefine()


def _cli(n: int, args: list[str], env: dict[str, str], expect: int) -> Series:
    import json

    s = Series()
    for _ in range(n):
        elapsed, proc = run([KVMKIT, "--json", *args], env=env)
        rows = json.loads(proc.stdout)
        if sum(1 for r in rows if r["name"].startswith(f"{PREFIX}hosts-")) != expect:
            raise RuntimeError(f"kvmkit {' '.join(args)} did not list {expect} bench domains")
        s.samples.append(elapsed * 1000)
    return s


def _api(server: Server, n: int, params: dict[str, str], expect: int) -> Series:
    s = Series()
    with server.client() as client:
        deadline = time.monotonic() + 30
        while True:  # the server follows the inventory every 2 s and fills each host's list: set-up, not timed
            r = client.get("/api/v1/vms", params=params)
            if r.status_code == 200 and sum(1 for v in r.json() if v["name"].startswith(f"{PREFIX}hosts-")) >= expect:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"GET /api/v1/vms {params} did not list {expect} bench domains: {r.text[:200]}")
            time.sleep(0.2)
        for _ in range(3):
            client.get("/api/v1/vms", params=params).raise_for_status()
        for _ in range(n):
            t0 = time.perf_counter()
            r = client.get("/api/v1/vms", params=params)
            s.samples.append((time.perf_counter() - t0) * 1000)
            r.raise_for_status()
            if "x-kvmkit-unreachable-hosts" in r.headers:
                raise RuntimeError(f"a host did not answer: {r.headers['x-kvmkit-unreachable-hosts']}")
    return s


def bench_hosts(ctx: Ctx, count: int = 100) -> list[Row]:
    from tests.support import testbed

    count = 30 if ctx.quick else count
    bed = testbed.create(2, no_kvm=())
    defined: list[tuple[libvirt.virConnect, list[str]]] = []
    server: Server | None = None
    conns: dict[str, libvirt.virConnect] = {}
    try:
        conns = {"local": ctx.conn, **{h.letter: h.connect() for h in bed}}
        for conn in conns.values():
            defined.append((conn, _define(conn, count, "qemu")))
        server = Server()
        server.start()
        env = {**COLD, **server.env}
        for h in bed:
            run([KVMKIT, "host", "add", h.letter, h.uri], env=env)
        case = f"{count} domains on each of 3 hosts (local + 2 test-bed hosts over qemu+tcp)"
        n = ctx.repeats * 3
        one_cli = _cli(n, ["--host", "a", "vm", "list", "--all"], env, count)
        three_cli = _cli(n, ["vm", "list", "--all"], env, 3 * count)
        one_api = _api(server, n * 3, {"host": "a"}, count)
        three_api = _api(server, n * 3, {}, 3 * count)
        target = "<= 1.5x one host"
        rows = [
            Row(SCEN, case, "kvmkit vm list --all --json (new process): three hosts", "ms", kvmkit=three_cli,
                peer=one_cli, peer_name="the same, one host (--host a)", target=target,
                met=lambda r: r.k() <= 1.5 * r.p()),
            Row(SCEN, case, "GET /api/v1/vms (kept-alive client): three hosts", "ms", kvmkit=three_api,
                peer=one_api, peer_name="GET /api/v1/vms?host=a", target=target,
                met=lambda r: r.k() <= 1.5 * r.p()),
        ]
        log(f"hosts: cli one/three {one_cli.median:.1f}/{three_cli.median:.1f} ms, "
            f"api one/three {one_api.median:.2f}/{three_api.median:.2f} ms")
        return rows
    finally:
        if server is not None:
            server.stop()
        for conn, names in defined:
            _undefine(conn, names)
        for letter, conn in conns.items():  # before the bed goes: closing a connection to a vanished
            if letter != "local":            # namespace waits for ever for the peer's answer
                with contextlib.suppress(libvirt.libvirtError):
                    conn.close()
        bed.teardown()
