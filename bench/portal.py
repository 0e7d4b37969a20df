"""Scenario 9: the web portal — login to a painted list of 1000 VMs in headless chromium, beside the API's
own list time, and the size of the portal's JS+CSS as the browser receives it (gzip).

Set-up defines 1000 lightweight shut-off domains straight through libvirt (the listing scenario's
harness), starts ``kvmkit serve`` (bench/server.py) with an admin that has a password, and drives Debian's
chromium (/usr/bin/chromium) with Playwright. Timed in the page: from the click on "Log in" (the page
already open at ``#/vms``) until every one of the 1000 bench rows is in the table and two animation frames
have passed (the frame with the rows has been painted). Each round is a fresh browser context (no cache,
no session). The peer row is GET /api/v1/vms on a kept-alive client, as in scenario 2.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import time
from pathlib import Path

import httpx

from bench.common import KVMKIT, PREFIX, Ctx, Row, Series, Unavailable, log
from bench.listing import Domains
from bench.server import Server

SCEN = "9. web portal"
STATIC = Path(__file__).resolve().parents[1] / "src" / "kvmkit" / "web" / "static"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PASSWORD = "bench-portal-password"
NOT_OURS = ("novnc/", "vnc-console.js")  # the graphical console's files are counted apart


def portal_assets() -> list[Path]:
    """The portal's own JS and CSS (+ one language's catalog), vendored libraries included, noVNC aside."""
    files = [p for p in STATIC.rglob("*") if p.is_file() and p.suffix in (".js", ".css")]
    files.append(STATIC / "i18n" / "zh-CN.json")  # the larger catalog; one is loaded
    return sorted(p for p in files if not any(n in str(p.relative_to(STATIC)) for n in NOT_OURS))


def asset_sizes() -> tuple[int, int]:
    """(raw bytes, gzip -9 bytes) of :func:`portal_assets` — what the server sends (it gzips them too)."""
    raw = packed = 0
    for p in portal_assets():
        data = p.read_bytes()
        raw += len(data)
        packed += len(gzip.compress(data, 9, mtime=0))
    return raw, packed


ROWS = """(n) => [...document.querySelectorAll('table.vms tbody tr td.name a')]
             .filter(a => a.textContent.startsWith('""" + PREFIX + """list-')).length >= n"""
PAINTED = """() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(
             () => r(performance.now() - window.__t0))))"""
PHASES = """() => Object.fromEntries(performance.getEntriesByType('resource')
    .filter(e => /api[/]v1[/](auth[/]login|auth[/]me|vms)$/.test(e.name))
    .map(e => [e.name.replace(/^.*api[/]v1[/]/, ''), e.responseEnd - window.__t0]))"""


def _paint_series(server: Server, user: str, n: int, count: int) -> tuple[Series, Series, Series]:
    """(first screen of rows painted, all ``count`` rows painted) in ms from the click on "Log in", and the
    page opened again logged in (a reload: from navigation start to all rows painted)."""
    from playwright.sync_api import sync_playwright

    first, full, reload = Series(), Series(), Series()
    phases: list[dict[str, float]] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            for i in range(n + 1):  # the first round warms the server's caches and the disk; not counted
                ctx = browser.new_context(viewport={"width": 1366, "height": 768})
                page = ctx.new_page()
                page.goto(f"{server.base}/#/vms")
                page.wait_for_selector("#login-name", timeout=180_000)
                page.fill("#login-name", user)
                page.fill("#login-password", PASSWORD)
                page.evaluate("() => { window.__t0 = performance.now(); }")
                page.click("form button[type=submit]")
                page.wait_for_function(ROWS, arg=20, timeout=60_000, polling="raf")
                ms_first = page.evaluate(PAINTED)
                page.wait_for_function(ROWS, arg=count, timeout=60_000, polling="raf")
                ms_full = page.evaluate(PAINTED)
                parts = page.evaluate(PHASES)
                page.reload()
                page.wait_for_function(ROWS, arg=count, timeout=60_000, polling="raf")
                ms_reload = page.evaluate("""() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(
                                             () => r(performance.now()))))""")
                ctx.close()
                if i:
                    first.samples.append(float(ms_first))
                    full.samples.append(float(ms_full))
                    reload.samples.append(float(ms_reload))
                    phases.append(parts)
        finally:
            browser.close()
    if phases:  # where the time goes: the median end of each request, from the click
        ends = {k: sorted(p[k] for p in phases if k in p) for k in phases[0]}
        full.note = ", ".join(f"{k} answered at {v[len(v) // 2]:.0f} ms" for k, v in ends.items())
    return first, full, reload


def _api_series(server: Server, n: int) -> Series:
    s = Series()
    with server.client() as client:
        for _ in range(3):
            client.get("/api/v1/vms").raise_for_status()
        for _ in range(n):
            t0 = time.perf_counter()
            client.get("/api/v1/vms").raise_for_status()
            s.samples.append((time.perf_counter() - t0) * 1000)
    return s


def bench_portal(ctx: Ctx) -> list[Row]:
    if not Path(CHROMIUM).exists():
        raise Unavailable("Debian's chromium is not installed (scripts/setup.sh installs it)")
    if not (STATIC / "vendor" / "preact.js").exists():
        raise Unavailable("the portal's libraries are not vendored (scripts/setup.sh runs npm ci in web/)")
    count = 300 if ctx.quick else 1000
    raw, packed = asset_sizes()
    size = Row(SCEN, f"{len(portal_assets())} files (noVNC aside)", "portal JS+CSS as sent (gzip)", "KiB",
               kvmkit=Series([packed / 1024]), target="<= 300 KB", met=lambda r: r.k() * 1024 <= 300_000)
    ctx.notes.append(f"9: the portal's JS+CSS+catalog is {raw / 1024:.0f} KiB raw, {packed / 1024:.1f} KiB gzipped "
                     "(the server gzips them; the 1000-row paint below is over loopback)")
    domains = Domains(ctx)
    rows = [size]
    try:
        domains.ensure(count)
        with Server() as server:
            user = f"{PREFIX}portal"
            made = subprocess.run([KVMKIT, "--json", "user", "add", user, "--role", "admin", "--password-stdin"],
                                  input=PASSWORD + "\n", text=True, capture_output=True,
                                  env={**os.environ, **server.env}, check=False, timeout=60)
            if made.returncode != 0 and "exist" not in made.stderr:
                raise Unavailable(f"kvmkit user add failed: {made.stderr.strip()[:200]}")
            deadline = time.monotonic() + 30  # the server's list catches up with domains defined behind it
            while time.monotonic() < deadline:
                got = httpx.get(f"{server.base}/api/v1/vms", headers=server.headers, timeout=30).json()
                if sum(1 for vm in got if vm["name"].startswith(f"{PREFIX}list-")) >= count:
                    break
                time.sleep(0.2)
            n = max(3, ctx.repeats * 2)
            peer = "GET /api/v1/vms, kept-alive client (the API's own list time)"
            first = Row(SCEN, f"{count} bench domains", "login to the first screen of the VM list painted (headless "
                        "chromium)", "ms", peer_name=peer)
            paint = Row(SCEN, f"{count} bench domains", f"login to all {count} rows of the VM list painted (headless "
                        "chromium)", "ms", peer_name=peer, target="<= 1000 ms" if count >= 1000 else "",
                        met=lambda r: r.k() <= 1000)
            again = Row(SCEN, f"{count} bench domains", f"open the VM list logged in: page load to all {count} rows "
                        "painted (no login request)", "ms", peer_name=peer,
                        target="<= 1000 ms" if count >= 1000 else "", met=lambda r: r.k() <= 1000)
            try:
                first.kvmkit, paint.kvmkit, again.kvmkit = _paint_series(server, user, n, count)
            except Exception as exc:  # reported in the table
                first.kvmkit_missing = paint.kvmkit_missing = again.kvmkit_missing = (
                    f"failed: {type(exc).__name__}: {str(exc)[:200]}")
            first.peer = paint.peer = again.peer = _api_series(server, n * 3)
            log(f"portal: first screen {first.k():.0f} ms, all rows {paint.k():.0f} ms, api {paint.p():.1f} ms, "
                f"assets {packed / 1024:.1f} KiB gz")
            if paint.kvmkit and paint.kvmkit.note:
                ctx.notes.append(f"9: in the browser (median of {n}): {paint.kvmkit.note}; the rest is rendering and "
                                 "painting the rows (the first 60 at once, then 500 per frame)")
            rows += [first, paint, again]
    finally:
        domains.remove()
    return rows


if __name__ == "__main__":  # the asset figure alone: python -m bench.portal
    r, p = asset_sizes()
    print(json.dumps({"files": len(portal_assets()), "raw_bytes": r, "gzip_bytes": p}))
