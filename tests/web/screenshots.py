"""Screenshots of every portal page in both languages for docs/screenshots/ (run by hand, not a test):

    PYTHONPATH=src .venv/bin/python -m tests.web.screenshots [OUT_DIR]

Starts a private ``kvmkit serve`` on qemu:///system, creates a micro-guest with a data disk (named with a
``kt-`` prefix, removed afterwards), takes a snapshot of it, and saves ``<page>-<lang>-<width>.png``: every
page and VM tab at 1366x768 in English and Chinese, the main pages at 390x844 too.
"""

from __future__ import annotations

import secrets
import sys
import time
from pathlib import Path

from tests.api.server import ROOT, Server
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, LAPTOP, PASSWORD, PHONE

PAGES = {"dashboard": "", "vms": "vms", "create": "create", "storage": "storage", "networks": "networks/default",
         "host": "host", "hosts": "hosts", "templates": "templates", "tasks": "tasks", "audit": "audit",
         "users": "users"}
TABS = ["overview", "console", "serial", "snapshots", "devices", "settings", "metrics", "xml"]
PHONE_PAGES = ["dashboard", "vms", "create", "vm-overview"]


def main(out: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tests.conftest import live_conn
    from tests.support.cleanup import sweep

    out.mkdir(parents=True, exist_ok=True)
    prefix = f"kt-{secrets.token_hex(3)}-"
    vm = f"{prefix}web1"
    srv = Server("sqlite", env={"KVMKIT_METRICS_INTERVAL": "2"})
    srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    try:
        api = srv.client(srv.token("admin"))
        api.post("/api/v1/vms", json={"name": vm, "micro": True, "memory_mib": "256M", "start": True,
                                      "disks": [{"size": "64M"}], "graphics": {"type": "vnc"}}).raise_for_status()
        for _ in range(300):
            if api.get(f"/api/v1/vms/{vm}").json().get("state") == "running":
                break
            time.sleep(1)
        time.sleep(20)  # a few metric samples for the charts
        api.post(f"/api/v1/vms/{vm}/snapshots", json={"name": "before-upgrade", "description": "demo"})
        time.sleep(5)
        routes = {**PAGES, **{f"vm-{tab}": f"vms/{vm}/{tab}" for tab in TABS}}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for locale, lang in (("en-US", "en"), ("zh-CN", "zh")):
                for size, vp in (("laptop", LAPTOP), ("phone", PHONE)):
                    ctx = browser.new_context(locale=locale, viewport=vp)
                    page = ctx.new_page()
                    page.goto(srv.url + "/")
                    page.screenshot(path=str(out / f"login-{lang}-{size}.png")) if size == "laptop" else None
                    page.fill("#login-name", "admin")
                    page.fill("#login-password", PASSWORD)
                    page.click("form button[type=submit]")
                    page.wait_for_selector("header.top")
                    for name, route in routes.items():
                        if size == "phone" and name not in PHONE_PAGES:
                            continue
                        page.goto(f"{srv.url}/#/{route}")
                        page.wait_for_selector("main h1")
                        page.wait_for_load_state("networkidle")
                        page.wait_for_timeout(4000 if name == "vm-console" else 1500)
                        page.screenshot(path=str(out / f"{name}-{lang}-{size}.png"))
                        print("saved", name, lang, size, flush=True)
                    ctx.close()
            browser.close()
    finally:
        srv.cleanup()
        sweep(live_conn(), prefix)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "screenshots")
