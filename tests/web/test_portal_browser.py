"""The portal in a real browser (Debian's chromium driven by Playwright) against a real ``kvmkit serve`` on
qemu:///system: log in; the dashboard's charts have data; the wizard refuses a bad memory value next to
its field, then creates a micro-guest that reaches running in the list without a reload (and without the
list being fetched again); a snapshot appears in the tree; the Hosts page adds a host that is down, turns
its maintenance on and off and removes it, and the VM's Migrate check against it shows the refusal; an ISO
uploads with a progress bar into the ISO library; every page passes axe-core (no serious or critical
violation), has no horizontal overflow at 390 px and, in Chinese, shows no English catalog text; the list
switches to Chinese; the VM is deleted with the bulk action after confirmation. One server, one browser, one
micro-guest for the module; the tests run in order and share ``flow``."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import LAPTOP, PHONE, PortalPage, catalogs

pytestmark = [pytest.mark.guest, pytest.mark.browser]
LONG = 240_000  # ms: a TCG boot on a loaded shared host


@pytest.fixture(scope="module")
def flow() -> dict[str, Any]:
    return {}


@pytest.fixture(scope="module")
def admin_page(open_portal: Any) -> PortalPage:
    return open_portal("padmin")


def vm_row(name: str) -> str:
    return f"table.vms tbody tr:has(a:text-is('{name}'))"


def test_login_and_dashboard_charts_have_data(admin_page: PortalPage) -> None:
    page = admin_page.page
    assert page.locator("header.top .who").inner_text().startswith("padmin")
    admin_page.goto("")
    assert page.locator("main h1").inner_text() == "Dashboard"
    # the server samples every second: the chart of host CPU gets drawn once the history has points
    # (the first sample of a counter has no rate yet; the dashboard reads the history again every 10 s)
    page.wait_for_selector("figure[aria-labelledby=ch-cpu] canvas", timeout=60_000)
    page.wait_for_function("() => /\\d/.test(document.querySelector('figure[aria-labelledby=ch-cpu] .chart-latest')"
                           ".textContent)", timeout=60_000)
    assert page.locator("figure[aria-labelledby=ch-mem] canvas").count() == 1
    page.wait_for_function("() => document.querySelector('.stat-value').textContent !== '…'", timeout=LONG)
    admin_page.assert_clean()


def test_wizard_refuses_bad_memory_next_to_the_field_then_creates(admin_page: PortalPage, web_prefix: str,
                                                                  flow: dict[str, Any]) -> None:
    page = admin_page.page
    name = f"{web_prefix}web"
    admin_page.goto("create")
    page.fill("#vm_name", name)
    page.fill("#memory", "lots")
    page.fill("#disk_size", "64M")
    page.check("#graphics")  # a VNC display: the console tab then mounts the graphical console when installed
    page.click("form.wizard button[type=submit]")
    err = page.wait_for_selector("#memory-error", timeout=30_000)
    assert "not a size" in err.inner_text()  # the spec's own message (the same the CLI and API give)
    assert page.get_attribute("#memory", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "memory"
    assert page.locator(".field-error").count() == 1  # only memory was wrong
    page.fill("#memory", "256M")
    page.click("form.wizard button[type=submit]")
    page.wait_for_url(re.compile(r"#/vms$"), timeout=30_000)
    flow["vm"] = name
    admin_page.assert_clean()


PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP5adS3KQexugxXNgDWX3bqfPdY/cG2kGb8vahWfVtOF op@kvmkit"


def test_wizard_cloud_init_fields_for_an_operator(open_portal: Any, web_prefix: str) -> None:
    """An operator gets the inline cloud-init fields (no host-file ones); the spec's refusals of a pasted private
    key and of a non-mapping #cloud-config appear next to their fields; fixed, the VM is created."""
    op = open_portal("poper")
    page = op.page
    name = f"{web_prefix}ci"
    op.goto("create")
    page.fill("#vm_name", name)
    page.uncheck("#start")  # defined with its seed; no boot needed to prove the fields
    page.check("#cloud_init")
    for field in ("#ci_hostname", "#ci_ssh_keys", "#ci_password", "#ci_user_data_text", "#ci_eject"):
        page.wait_for_selector(field)
    assert page.locator("#ci_user_data, #ci_ssh_key, #ci_meta_data").count() == 0  # host files: admins only
    assert page.get_attribute("#ci_password", "type") == "password"
    page.fill("#ci_hostname", "web-1")
    page.fill("#ci_ssh_keys", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n")
    page.fill("#ci_user_data_text", "#cloud-config\n- a list\n- not a mapping\n")
    page.click("form.wizard button[type=submit]")
    key_err = page.wait_for_selector("#ci_ssh_keys-error", timeout=30_000)
    assert "PRIVATE key" in key_err.inner_text() and "public key" in key_err.inner_text()
    assert "not a YAML mapping" in page.inner_text("#ci_user_data_text-error")
    assert page.get_attribute("#ci_ssh_keys", "aria-invalid") == "true"
    assert page.locator(".field-error").count() == 2
    page.fill("#ci_ssh_keys", f"# my laptop\n{PUB}\n")
    page.fill("#ci_user_data_text", "#cloud-config\npackages: [htop]\n")
    page.fill("#ci_password", "Portal-pw-123")
    page.check("#ci_eject")
    page.click("form.wizard button[type=submit]")
    page.wait_for_url(re.compile(r"#/vms$"), timeout=30_000)
    page.wait_for_selector(vm_row(name), timeout=LONG)
    op.assert_clean()


def test_vm_reaches_running_in_the_list_without_reload(admin_page: PortalPage, flow: dict[str, Any]) -> None:
    page = admin_page.page
    name = flow["vm"]
    page.evaluate("window.__kvmkitNoReload = true")
    lists: list[str] = []
    page.on("request", lambda r: lists.append(r.url) if r.url.endswith("/api/v1/vms") else None)
    page.wait_for_selector(vm_row(name), timeout=LONG)
    page.wait_for_selector(f"{vm_row(name)} .badge.vm-running", timeout=LONG)
    assert page.evaluate("window.__kvmkitNoReload") is True, "the page was reloaded"
    assert lists == [], f"the whole VM list was fetched again: {lists}"
    admin_page.assert_clean()


def test_snapshot_appears_in_the_tree(admin_page: PortalPage, flow: dict[str, Any]) -> None:
    page = admin_page.page
    admin_page.goto(f"vms/{flow['vm']}/snapshots")
    page.wait_for_selector("#snap_name")
    page.fill("#snap_name", "before-upgrade")
    page.fill("#snap_desc", "portal test")
    page.click("#vm-snap-new ~ form button[type=submit], form:has(#snap_name) button[type=submit]")
    item = page.wait_for_selector(".snap-tree li:has(.snap-name:text-is('before-upgrade'))", timeout=LONG)
    assert "portal test" in item.inner_text()
    assert page.locator(".snap-tree .badge.current").count() == 1
    admin_page.assert_clean()


def host_row(name: str) -> str:
    return f"table.hosts tbody tr[data-host='{name}']"


def test_hosts_page_adds_a_down_host_and_the_migrate_check_refuses_it(admin_page: PortalPage, web_prefix: str,
                                                                        flow: dict[str, Any]) -> None:
    """The Hosts page: add a host whose libvirt cannot answer (check off) -> listed as down; maintenance on and
    off; the VM's Migrate dialog checks against it and shows the refusal with its reason; remove it (force,
    as it cannot be asked). The VM list has a Host column naming the VM's host."""
    page = admin_page.page
    name = f"{web_prefix}h2"
    admin_page.goto("hosts")
    page.wait_for_selector(host_row("local"), timeout=60_000)
    page.fill("#host_name", name)
    page.fill("#host_uri", "qemu+tcp://192.0.2.1/system")  # TEST-NET-1: nothing answers there
    page.uncheck("#host_check")
    page.click("form:has(#host_name) button[type=submit]")
    row = host_row(name)
    page.wait_for_selector(f"{row} .badge.host-down", timeout=120_000)
    assert page.locator(f"{row} td.path").inner_text() == "qemu+tcp://192.0.2.1/system"
    # a bad URI is refused next to its field
    page.fill("#host_name", f"{web_prefix}h3")
    page.fill("#host_uri", "http://example.org/")
    page.click("form:has(#host_name) button[type=submit]")
    err = page.wait_for_selector("#host_uri-error", timeout=30_000)
    assert "not a libvirt URI" in err.inner_text()
    assert page.get_attribute("#host_uri", "aria-invalid") == "true"
    # maintenance on and off (the button says which; the state shows down while it cannot be reached)
    page.click(f"{row} button:text-is('Maintenance on')")
    page.wait_for_selector(f"{row} button:text-is('Maintenance off')", timeout=120_000)
    page.click(f"{row} button:text-is('Maintenance off')")
    page.wait_for_selector(f"{row} button:text-is('Maintenance on')", timeout=120_000)
    admin_page.assert_clean()

    # the VM list names each VM's host
    admin_page.goto("vms")
    page.wait_for_selector(vm_row(flow["vm"]), timeout=LONG)
    assert page.locator("table.vms thead th.host").inner_text() == "Host"
    assert page.locator(f"{vm_row(flow['vm'])} td.host").inner_text() == "local"
    page.select_option("#vm-host", "local")
    assert page.locator(vm_row(flow["vm"])).count() == 1

    # the Migrate dialog: Check against the down host shows the refusal and why
    admin_page.goto(f"vms/{flow['vm']}")
    page.click("#vm-migrate")
    page.wait_for_selector("dialog.migrate[open] #mig_to option", state="attached", timeout=60_000)
    page.select_option("#mig_to", name)
    page.click("#mig-check")
    box = page.wait_for_selector("dialog.migrate .error-box, dialog.migrate .migrate-plan", timeout=120_000)
    text = box.inner_text()
    assert name in text and ("down" in text or "answer" in text), text
    assert page.evaluate("axe.run(document.querySelector('dialog.migrate')).then(r => r.violations"
                         ".filter(v => v.impact === 'serious' || v.impact === 'critical').map(v => v.id))") == []
    page.keyboard.press("Escape")
    page.wait_for_selector("dialog.migrate[open]", state="detached")

    # remove it: the confirmation says it does not answer (forced)
    admin_page.goto("hosts")
    page.click(f"{row} button.danger", timeout=60_000)
    dialog = page.wait_for_selector("dialog.confirm[open]")
    assert "force" in dialog.inner_text()
    page.click("dialog.confirm button[type=submit]")
    page.wait_for_selector(row, state="detached", timeout=120_000)
    admin_page.assert_clean()


def make_iso(path: Path, web_prefix: str) -> Path:
    src = path.parent / "iso-src"
    src.mkdir(exist_ok=True)
    (src / "README.TXT").write_text("kvmkit portal upload test\n")
    (src / "PAD.BIN").write_bytes(b"\0" * (6 * 1024 * 1024))  # big enough to see the bar move when throttled
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "KVMKIT_TEST", "-o", str(path), str(src)],
                   check=True, capture_output=True)
    return path


def test_upload_an_iso_with_a_progress_bar(admin_page: PortalPage, web_prefix: str, tmp_path: Path) -> None:
    page = admin_page.page
    iso = make_iso(tmp_path / f"{web_prefix}tiny.iso", web_prefix)
    admin_page.goto("storage/default")
    page.set_input_files("#up_file", str(iso))
    assert page.input_value("#up_name") == iso.name
    page.select_option("#up_format", "raw")
    # record every value the bar shows; throttle the upload so that it takes a few seconds
    page.evaluate("""() => { window.__bar = []; new MutationObserver(() => {
        const b = document.getElementById('up-bar'); if (b) window.__bar.push(Number(b.value));
      }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['value']}); }""")
    cdp = admin_page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": 2 * 1024 * 1024})
    page.click("form:has(#up_file) button[type=submit]")
    page.wait_for_selector("#up-bar", timeout=30_000)
    page.wait_for_selector(f".iso-list li:has-text('{iso.name}')", timeout=LONG)
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": -1})
    seen = page.evaluate("window.__bar")
    assert any(0 < v < 100 for v in seen), f"the progress bar never showed a partial upload: {seen[:20]}"
    assert page.locator("#up-bar").count() == 0  # gone when done
    admin_page.assert_clean()


PAGES = ["", "vms", "create", "storage", "networks", "networks/default", "host", "hosts", "templates", "tasks",
         "audit", "users"]
VM_TABS = ["overview", "console", "serial", "snapshots", "devices", "settings", "metrics", "xml"]

VISIBLE_TEXT = """() => {
  const out = [];
  const skip = (el) => el.closest('[lang="en"], code, pre, textarea, .path, .mono, script, style');
  const shown = (el) => el && el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    const text = n.textContent.trim();
    if (text && !skip(el) && (shown(el) || el.tagName === 'OPTION')) out.push(text);
  }
  for (const el of document.querySelectorAll('[aria-label], [placeholder], [title]')) {
    if (skip(el)) continue;
    for (const a of ['aria-label', 'placeholder', 'title']) if (el.getAttribute(a)) out.push(el.getAttribute(a).trim());
  }
  return out;
}"""


def english_matchers() -> list[tuple[str, re.Pattern[str]]]:
    """English catalog messages that differ in Chinese, as full-text patterns ({x} matches anything)."""
    cats = catalogs()
    out = []
    for key, en in cats["en"].items():
        if en == cats["zh-CN"][key] or not re.search(r"[A-Za-z]{2,}", re.sub(r"\{\w+\}", "", en)):
            continue
        pattern = "".join(".+?" if part.startswith("{") else re.escape(part)
                          for part in re.split(r"(\{\w+\})", en) if part)
        out.append((key, re.compile(f"^{pattern}$")))
    return out


def check_page(pp: PortalPage, route: str, chinese: bool, width: int) -> list[str]:
    pp.goto(route)
    pp.page.wait_for_load_state("networkidle")
    pp.page.wait_for_timeout(300)  # let the last answers render
    problems = []
    scroll = pp.page.evaluate("document.documentElement.scrollWidth")
    if scroll > width:
        problems.append(f"#{route} at {width} px: the page is {scroll} px wide")
    for v in pp.axe():
        problems.append(f"#{route} at {width} px: axe {v['impact']} {v['id']}: {v['help']} {v['nodes']}")
    if chinese:
        matchers = english_matchers()
        for text in pp.page.evaluate(VISIBLE_TEXT):
            for key, pattern in matchers:
                if pattern.match(text):
                    problems.append(f"#{route}: English text {text!r} (catalog key {key}) on the Chinese page")
    return problems


@pytest.mark.parametrize(("locale", "viewport"), [("en-US", LAPTOP), ("zh-CN", PHONE), ("zh-CN", LAPTOP),
                                                  ("en-US", PHONE)], ids=["en-laptop", "zh-phone", "zh-laptop",
                                                                          "en-phone"])
def test_every_page_is_accessible_fits_and_is_translated(open_portal: Any, flow: dict[str, Any], locale: str,
                                                         viewport: dict[str, int]) -> None:
    pp = open_portal("padmin", locale=locale, viewport=viewport)
    chinese = locale.startswith("zh")
    assert pp.page.evaluate("document.documentElement.lang") == ("zh-CN" if chinese else "en")
    routes = PAGES + [f"vms/{flow['vm']}/{tab}" for tab in VM_TABS]
    problems: list[str] = []
    for route in routes:
        problems += check_page(pp, route, chinese, viewport["width"])
    # the login page too, and the confirmation dialog
    assert problems == [], "\n".join(problems)
    pp.assert_clean()


def test_login_page_is_accessible_in_both_languages(open_portal: Any) -> None:
    for locale in ("en-US", "zh-CN"):
        pp = open_portal(locale=locale, viewport=PHONE, logged_in=False)
        pp.page.goto(pp.base + "/")
        pp.page.wait_for_selector("#login-name")
        assert pp.axe() == []
        assert pp.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        assert pp.page.locator("h1").inner_text() == ("登录" if locale == "zh-CN" else "Log in")
        pp.page.fill("#login-name", "padmin")
        pp.page.fill("#login-password", "wrong-password")
        pp.page.click("form button[type=submit]")
        msg = pp.page.wait_for_selector(".error-msg").inner_text()
        assert msg == ("用户名或密码错误。" if locale == "zh-CN" else "wrong user name or password")
        pp.assert_clean()


def test_switch_to_chinese_and_see_the_vm_list_in_chinese(admin_page: PortalPage, flow: dict[str, Any]) -> None:
    page = admin_page.page
    admin_page.goto("vms")
    page.select_option("#lang-top", "zh-CN")
    page.wait_for_function("() => document.documentElement.lang === 'zh-CN'")
    assert page.locator("main h1").inner_text() == "虚拟机"
    assert page.locator(f"{vm_row(flow['vm'])} .badge").inner_text() == "运行中"
    assert page.locator("table.vms thead th").nth(1).inner_text() == "名称"
    # remembered for this user: a new login in an English browser comes back in Chinese
    page.reload()
    page.wait_for_selector("main h1")
    assert page.locator("main h1").inner_text() == "虚拟机"
    admin_page.assert_clean()


def test_delete_the_vm_with_the_bulk_action(admin_page: PortalPage, flow: dict[str, Any]) -> None:
    page = admin_page.page
    name = flow["vm"]
    admin_page.goto("vms")
    page.fill("#vm-search", name)
    page.check(f"{vm_row(name)} input[type=checkbox]")
    page.click(".bulk button.danger")
    dialog = page.wait_for_selector("dialog.confirm[open]")
    assert name in dialog.inner_text()
    page.click("dialog.confirm button[type=submit]")
    page.wait_for_selector(vm_row(name), state="detached", timeout=LONG)
    page.select_option("#lang-top", "en")
    admin_page.assert_clean()
