"""The graphical console in a real browser: Debian's chromium driven by Playwright (by its path; no browser
is downloaded), against a real ``kvmkit serve`` on qemu:///system and a micro-guest with VNC. The page is
/static/vnc.html, which mounts static/vnc-console.js (noVNC vendored at setup) like the portal's VM page.

It types a command on the canvas (key presses of a US keyboard, Shift held where a person holds it) that
makes the guest write a marker to its serial port, and finds the marker in the serial log over the API;
types another through "Type text" (paste as key presses); reboots the guest with the Ctrl-Alt-Del button;
switches scaling and fullscreen; shows the page's Content-Security-Policy (no
'unsafe-inline') lets all of it run, the WebSocket included; a viewer watches view-only and its key
presses never reach the guest even with noVNC's own view-only switch turned off in the page (after a
positive control); an operator without a grant and a VM without graphics get clear statuses; a replayed
ticket is refused with the close code 4401.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api.guest_http import create_micro, deleting, wait_console
from tests.api.server import Server
from tests.conftest import live_conn
from tests.support.cleanup import sweep

pytestmark = pytest.mark.guest
PASSWORD = "vnc-web-pass-123"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CSP_WATCH = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
             "(e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
SHIFTED = {"_": "Minus", "+": "Equal", ">": "Period", "<": "Comma", "?": "Slash", ":": "Semicolon", '"': "Quote",
           "|": "Backslash", "~": "Backquote", "!": "Digit1", "@": "Digit2", "#": "Digit3", "$": "Digit4"}
PLAIN = {"-": "Minus", "=": "Equal", ".": "Period", ",": "Comma", "/": "Slash", ";": "Semicolon", "'": "Quote",
         " ": "Space", "\n": "Enter"}


@pytest.fixture(scope="module")
def mod_prefix() -> Iterator[str]:
    p = f"kt-{secrets.token_hex(3)}-"
    yield p
    sweep(live_conn(), p)


@pytest.fixture(scope="module")
def srv(mod_prefix: str) -> Iterator[Server]:
    s = Server("sqlite")
    s.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    s.start()
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def admin(srv: Server) -> Iterator[httpx.Client]:
    with srv.client(srv.token("admin")) as c:
        yield c


@pytest.fixture(scope="module")
def vm(admin: httpx.Client, mod_prefix: str) -> Iterator[str]:
    name = f"{mod_prefix}gfx"
    with deleting(admin, name):
        create_micro(admin, name, graphics={"type": "vnc"})
        wait_console(admin, name, "KVMKIT-STATUS")
        yield name


@pytest.fixture(scope="module")
def users(admin: httpx.Client, vm: str, mod_prefix: str) -> dict[str, str]:
    """Login names: an operator and a viewer delegated to ``vm``, an operator delegated nothing."""
    names = {"op": f"{mod_prefix}op", "viewer": f"{mod_prefix}viewer", "stranger": f"{mod_prefix}stranger"}
    for key, name in names.items():
        role = "viewer" if key == "viewer" else "operator"
        r = admin.post("/api/v1/users", json={"name": name, "role": role, "password": PASSWORD,
                                              "vm_scope": "granted"})
        assert r.status_code == 201, r.text
        if key != "stranger":
            assert admin.post(f"/api/v1/users/{name}/grants", json={"vm": vm}).status_code == 201
    return names


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    profile = Path(tempfile.mkdtemp(prefix="kvmkit-chromium-"))
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True,
                               env={"HOME": str(profile)})  # a fresh profile; nothing of the host's
        yield b
        b.close()
    shutil.rmtree(profile, ignore_errors=True)


def _page(browser, srv: Server, user: str):  # -> playwright Page, logged in as ``user``
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    r = context.request.post(f"{srv.url}/api/v1/auth/login", data={"name": user, "password": PASSWORD})
    assert r.status == 200, r.text()
    page = context.new_page()
    page.add_init_script(CSP_WATCH)
    return page


def _open(page, srv: Server, vm: str, view_only: bool = False, state: str = "connected") -> None:
    response = page.goto(f"{srv.url}/static/vnc.html?vm={vm}" + ("&view_only=1" if view_only else ""))
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page.wait_for_selector(f"#vnc[data-vnc-state='{state}']", timeout=60_000)


def _status(page) -> str:
    return str(page.text_content("#vnc .vnc-status"))


def _type_us(page, text: str) -> None:
    """Press the keys a person with a US keyboard presses for ``text`` (Shift for capitals and symbols)."""
    for ch in text:
        if ch.isascii() and ch.isalpha():
            page.keyboard.press(("Shift+" if ch.isupper() else "") + "Key" + ch.upper())
        elif ch.isdigit():
            page.keyboard.press("Digit" + ch)
        elif ch in SHIFTED:
            page.keyboard.press("Shift+" + SHIFTED[ch])
        else:
            page.keyboard.press(PLAIN[ch])


def _type_marker(page, admin: httpx.Client, vm: str, marker: str) -> None:
    """Type the marker command on the canvas until the serial log shows it (Ctrl-U first on a retry: the
    VGA shell may not have read the first keys)."""
    page.click("#vnc canvas")
    for attempt in range(3):
        page.keyboard.press("Control+KeyU")
        _type_us(page, f"echo {marker} > /dev/ttyS0\n")
        try:
            wait_console(admin, vm, re.escape(marker), timeout=40)
            return
        except TimeoutError:
            print(f"attempt {attempt} of typing {marker} on {vm}: not in the serial log yet")
            if attempt == 2:
                raise


def _no_csp_violation(page) -> None:
    assert page.evaluate("window.__csp") == []


def test_operator_types_on_the_canvas_and_the_guest_answers(browser, srv, admin, vm, users) -> None:
    page = _page(browser, srv, users["op"])
    _open(page, srv, vm)
    assert vm in _status(page)
    # the component names its screen and gives it its role itself (no page patches it: axe's aria rules)
    assert page.get_attribute("#vnc .vnc-screen", "role") == "application"
    assert vm in str(page.get_attribute("#vnc .vnc-screen", "aria-label"))
    assert page.is_enabled("[data-action='ctrl-alt-del']") and page.is_enabled("[data-action='type']")
    _type_marker(page, admin, vm, f"KVMKIT-VNC-{secrets.token_hex(4)}")
    # paste as typed text: the text goes in as key presses (Shift included)
    pasted = f"KVMKIT-VNC-Paste-{secrets.token_hex(4)}"
    page.click("[data-action='type']")
    page.fill("#vnc .vnc-paste textarea", f"echo {pasted} > /dev/ttyS0\n")
    page.click("#vnc .vnc-paste button[type='submit']")
    wait_console(admin, vm, re.escape(pasted), timeout=60)
    # scaling: actual size shows the guest's 720x400 pixels one to one; fit scales it to the window
    page.click("[data-action='scale']")
    assert page.evaluate("document.querySelector('#vnc canvas').clientWidth") == 720
    page.click("[data-action='scale']")
    assert page.evaluate("document.querySelector('#vnc canvas').clientWidth") != 720
    # Ctrl-Alt-Del reaches the guest's kernel, which reboots at once on it (the micro-guest's init does not
    # ask for it: kernel.ctrl-alt-del stays 1): a second boot shows in the serial log, the console stays
    log = admin.get(f"/api/v1/vms/{vm}/console/log").json()["text"]
    booted = log.rindex("KVMKIT-GUEST-READY") + 1
    page.click("[data-action='ctrl-alt-del']")
    ready = wait_console(admin, vm, "KVMKIT-GUEST-READY", after=booted, timeout=120)
    wait_console(admin, vm, "KVMKIT-STATUS", after=ready.end(), timeout=120)  # its VGA shell runs again
    page.click("[data-action='fullscreen']")
    page.wait_for_function("document.fullscreenElement !== null", timeout=10_000)
    assert page.get_attribute("#vnc", "data-vnc-state") == "connected"
    _no_csp_violation(page)
    shots = os.environ.get("KVMKIT_SCREENSHOTS")  # a directory: keep a picture of the console there
    if shots:
        page.screenshot(path=str(Path(shots) / "vnc-console.png"))
    page.context.close()


def test_view_only_keys_never_reach_the_guest(browser, srv, admin, vm, users) -> None:
    """The viewer's page turns noVNC's view-only switch off and types: the server drops the keys. The
    operator's marker typed afterwards arrives, the viewer's never does."""
    viewer = _page(browser, srv, users["viewer"])
    _open(viewer, srv, vm, view_only=True)
    assert "view only" in _status(viewer)
    assert viewer.is_hidden("[data-action='ctrl-alt-del']") and viewer.is_hidden("[data-action='type']")
    blocked = f"KVMKIT-VNC-Viewer-{secrets.token_hex(4)}"
    viewer.evaluate("window.kvmkitVnc.rfb.viewOnly = false")  # what a tampered page could do
    viewer.click("#vnc canvas")
    _type_us(viewer, f"echo {blocked} > /dev/ttyS0\n")
    op = _page(browser, srv, users["op"])
    _open(op, srv, vm)
    _type_marker(op, admin, vm, f"KVMKIT-VNC-After-{secrets.token_hex(4)}")
    assert blocked not in admin.get(f"/api/v1/vms/{vm}/console/log").json()["text"]
    assert viewer.get_attribute("#vnc", "data-vnc-state") == "connected"  # still watching
    # a viewer asking for the full console gets a clear refusal
    _open(viewer, srv, vm, state="failed")
    assert "may not open" in _status(viewer)
    _no_csp_violation(viewer)
    viewer.context.close()
    op.context.close()


def test_refusals_are_shown_and_a_replayed_ticket_is_closed(browser, srv, admin, vm, users, mod_prefix) -> None:
    stranger = _page(browser, srv, users["stranger"])
    _open(stranger, srv, vm, state="failed")  # no grant: the VM does not exist for this user
    assert "not found" in _status(stranger)
    plain = f"{mod_prefix}plain"
    with deleting(admin, plain):
        create_micro(admin, plain, start=False)
        page = _page(browser, srv, "admin")
        _open(page, srv, plain, state="failed")
        assert "no graphical console" in _status(page)
        # a ticket opens one console, once: the second WebSocket with it is closed with 4401
        codes = page.evaluate("""async (vm) => {
            const csrf = document.cookie.split('; ').find((c) => c.startsWith('kvmkit_csrf=')).slice(12);
            const r = await fetch(`/api/v1/vms/${vm}/console`, {method: 'POST', credentials: 'same-origin',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': decodeURIComponent(csrf)},
                body: JSON.stringify({kind: 'vnc'})});
            const t = await r.json();
            const url = `ws://${location.host}${t.ws_path}?ticket=${t.ticket}`;
            const open = () => new Promise((resolve) => {
                const ws = new WebSocket(url, ['binary']);
                ws.binaryType = 'arraybuffer';
                ws.onmessage = () => ws.close(1000);
                ws.onclose = (e) => resolve(e.code);
            });
            return [await open(), await open()];
        }""", vm)
        assert codes == [1000, 4401], codes
        _no_csp_violation(page)
        page.context.close()
    stranger.context.close()
