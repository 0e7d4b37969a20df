"""Browser tests of the portal: one real ``kvmkit serve`` on qemu:///system and one Debian chromium per
module, driven by Playwright (never a downloaded browser).

Fixtures for any browser test module (the graphical console's tests reuse them):

- ``portal_server``: a started :class:`tests.api.server.Server` (SQLite, metrics sampled every second) with
  the users ``padmin`` (admin), ``poper`` (operator) and ``pviewer`` (viewer), password :data:`PASSWORD`;
- ``web_prefix``: a name prefix (``kt-xxxxxx-``) for everything the module creates, swept afterwards;
- ``browser``: chromium from ``/usr/bin/chromium`` (headless, sandbox off, no network services, a fresh
  temporary profile per launch);
- ``open_portal(user, locale=, viewport=)``: a new browser context + page, logged in as ``user`` through
  the login form; the returned :class:`PortalPage` records console errors, CSP violations and messages the
  catalogs lack, which :meth:`PortalPage.assert_clean` turns into a failure.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.api.server import ROOT, Server

PASSWORD = "portal-pass-123"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
USERS = {"padmin": "admin", "poper": "operator", "pviewer": "viewer"}


@pytest.fixture(scope="module")
def web_prefix() -> Iterator[str]:
    from tests.conftest import live_conn
    from tests.support.cleanup import sweep

    p = f"kt-{secrets.token_hex(3)}-"
    yield p
    sweep(live_conn(), p)


@pytest.fixture(scope="module")
def portal_server(micro_image: Any) -> Iterator[Server]:
    srv = Server("sqlite", env={"KVMKIT_METRICS_INTERVAL": "1"})
    for user, role in USERS.items():
        srv.cli("user", "add", user, "--role", role, "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: scripts/setup.sh installs it (scripts/packages.txt)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@dataclass
class PortalPage:
    page: Any
    context: Any
    base: str
    problems: list[str] = field(default_factory=list)

    def goto(self, route: str) -> None:
        """Open ``#/route`` and wait until its main heading is there."""
        self.page.goto(f"{self.base}/#/{route}")
        self.page.wait_for_selector("main h1", timeout=30_000)

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)

    def axe(self) -> list[dict[str, Any]]:
        """Serious and critical axe-core violations of the page as it is now."""
        result = self.page.evaluate("""async () => {
            const r = await axe.run(document, {resultTypes: ["violations"]});
            return r.violations.filter(v => v.impact === "serious" || v.impact === "critical")
                .map(v => ({id: v.id, impact: v.impact, help: v.help,
                            nodes: v.nodes.slice(0, 5).map(n => n.target.join(" "))}));
        }""")
        return list(result)

    def close(self) -> None:
        self.context.close()


def _watch(pp: PortalPage) -> None:
    def on_console(msg: Any) -> None:
        text = msg.text
        if "Content Security Policy" in text or "kvmkit: no message" in text:
            pp.problems.append(f"console.{msg.type}: {text}")

    pp.page.on("console", on_console)
    pp.page.on("pageerror", lambda err: pp.problems.append(f"page error: {err}"))


def login(pp: PortalPage, user: str) -> None:
    page = pp.page
    page.goto(pp.base + "/")
    page.fill("#login-name", user)
    page.fill("#login-password", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_selector("header.top", timeout=30_000)


@pytest.fixture(scope="module")
def open_portal(browser: Any, portal_server: Server) -> Iterator[Callable[..., PortalPage]]:
    opened: list[PortalPage] = []

    def open_(user: str = "padmin", *, locale: str = "en-US", viewport: dict[str, int] | None = None,
              logged_in: bool = True) -> PortalPage:
        ctx = browser.new_context(locale=locale, viewport=viewport or LAPTOP)
        if AXE.exists():  # injected by the browser driver (not subject to the page's CSP), never served
            ctx.add_init_script(path=str(AXE))
        pp = PortalPage(ctx.new_page(), ctx, portal_server.url)
        _watch(pp)
        opened.append(pp)
        if logged_in:
            login(pp, user)
        return pp

    yield open_
    for pp in opened:
        pp.close()


def catalogs() -> dict[str, dict[str, str]]:
    base = ROOT / "src" / "kvmkit" / "web" / "static" / "i18n"
    return {lang: json.loads((base / f"{lang}.json").read_text()) for lang in ("en", "zh-CN")}
