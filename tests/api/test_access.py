"""Access (issue 16 item 9), against real ``kvmkit serve`` processes and real guests:

- every route but login and health needs a token (enumerated from the OpenAPI document, plus the
  WebSocket routes by hand);
- roles cannot be escalated: a viewer cannot grant itself or change its role, an operator of VM A cannot
  touch VM B (404), host paths, host NICs, open VNC and other VMs' volumes are for admins only;
- failed logins are limited per user (across addresses) and per address;
- session cookies are HttpOnly and SameSite (Secure under TLS: test_tls.py), and cookie changes need
  the CSRF token;
- secrets (passwords, tokens, console tickets, VNC passwords, cloud-init passwords) appear in no log line,
  audit entry, API answer or process command line (the server's and QEMU's);
- the database is mode 0600; VNC listens on loopback with a password unless told otherwise.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.api.conftest import wait_task
from tests.api.server import Server

pytestmark = pytest.mark.guest
PUBLIC = {("POST", "/api/v1/auth/login"), ("GET", "/healthz"), ("GET", "/readyz")}
WEBSOCKETS = ["/api/v1/vms/{name}/console/ws"]
ADMIN_PASSWORD = "admin-pass-123-secret"


@pytest.fixture(scope="module")
def logged() -> Iterator[Server]:
    """A server on qemu:///system logging at info level (uvicorn's access log on) into server.log."""
    srv = Server("sqlite", args=["--trusted-proxy", "127.0.0.1"])
    srv.log_level = "info"
    srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="module")
def root(logged: Server) -> Iterator[httpx.Client]:
    with logged.client(logged.token("admin")) as c:
        yield c


@pytest.fixture()
def user(logged: Server, root: httpx.Client, prefix: str):
    made: list[httpx.Client] = []

    def make(suffix: str, role: str, **extra: Any) -> tuple[str, httpx.Client]:
        name = f"{prefix}{suffix}"
        r = root.post("/api/v1/users", json={"name": name, "role": role, "password": "pw-" + name, **extra})
        assert r.status_code == 201, r.text
        c = logged.client(root.post("/api/v1/tokens", json={"name": "t", "user": name}).json()["token"])
        made.append(c)
        return name, c

    yield make
    for c in made:
        c.close()


def _ws_close_code(srv: Server, path: str, **headers: str) -> int:
    ws = connect(f"ws://127.0.0.1:{srv.port}{path}", additional_headers=headers or None, open_timeout=30,
                 legacy=True)
    try:
        while True:
            ws.recv(timeout=30)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else -1
    finally:
        ws.close()


def test_every_route_but_login_and_health_needs_a_token(logged: Server, root: httpx.Client) -> None:
    spec = httpx.get(f"{logged.url}/api/v1/openapi.json").json()
    routes = [(m.upper(), path) for path, ops in spec["paths"].items() for m in ops]
    assert ("POST", "/api/v1/vms/{name}/console") in routes and len(routes) > 25
    revoked = root.post("/api/v1/tokens", json={"name": "gone"}).json()
    assert root.delete(f"/api/v1/tokens/{revoked['id']}").status_code == 204
    with logged.client() as anon, logged.client("kvk_not-a-token") as bogus, logged.client(revoked["token"]) as old:
        for method, path in routes:
            if (method, path) in PUBLIC:
                continue
            url = re.sub(r"\{[^}]+\}", "x1", path)
            for c in (anon, bogus, old):
                r = c.request(method, url, json={})
                assert r.status_code == 401, f"{method} {path}: {r.status_code} without a valid token"
    for path in WEBSOCKETS:
        url = path.replace("{name}", "x1")
        assert _ws_close_code(logged, url) == 4401
        assert _ws_close_code(logged, url + "?token=" + revoked["token"]) == 4401
        assert _ws_close_code(logged, url, Cookie="kvmkit_session=kvk_bogus") == 4401


def test_roles_cannot_be_escalated(logged: Server, root: httpx.Client, user, micro_guest) -> None:
    a = micro_guest("a", start=False).name
    b = micro_guest("b", start=False).name
    vname, viewer = user("v", "viewer")
    oname, op = user("o", "operator")
    assert root.post(f"/api/v1/users/{oname}/grants", json={"vm": a}).status_code == 201
    for c, name in ((viewer, vname), (op, oname)):
        assert c.post(f"/api/v1/users/{name}/grants", json={"vm": b}).status_code == 403
        assert c.patch(f"/api/v1/users/{name}", json={"role": "admin"}).status_code == 403
        assert c.patch(f"/api/v1/users/{name}", json={"vm_scope": "all"}).status_code == 403
        new = {"name": name + "x", "role": "admin", "password": "x" * 10}
        assert c.post("/api/v1/users", json=new).status_code == 403
        assert c.post("/api/v1/tokens", json={"name": "t", "user": "admin"}).status_code == 403
        assert c.post(f"/api/v1/groups/{name}/grants", json={"vm": b}).status_code == 403
        assert c.get("/api/v1/audit").status_code == 403
    assert viewer.post(f"/api/v1/vms/{a}/console").status_code == 403
    assert viewer.post(f"/api/v1/vms/{a}/actions/start").status_code == 403
    # the operator of A sees nothing of B: every route answers 404, as if B did not exist
    for method, url, body in [("GET", f"/api/v1/vms/{b}", None), ("GET", f"/api/v1/vms/{b}/snapshots", None),
                              ("POST", f"/api/v1/vms/{b}/actions/start", None), ("DELETE", f"/api/v1/vms/{b}", None),
                              ("PATCH", f"/api/v1/vms/{b}", {"autostart": True}),
                              ("POST", f"/api/v1/vms/{b}/snapshots", {"name": "s"}),
                              ("POST", f"/api/v1/vms/{b}/console", None)]:
        r = op.request(method, url, json=body)
        assert r.status_code == 404, f"{method} {url}: {r.status_code}"
    assert [v["name"] for v in op.get("/api/v1/vms").json()] == [a]
    assert op.get(f"/api/v1/vms/{a}").status_code == 200
    assert op.get("/api/v1/auth/me").json()["role"] == "operator"


def test_a_grant_does_not_pass_to_the_next_vm_of_that_name(logged: Server, root: httpx.Client, user,
                                                           micro_guest, conn) -> None:
    vm = micro_guest("g", start=False)
    name, op = user("g", "operator")
    assert root.post(f"/api/v1/users/{name}/grants", json={"vm": vm.name}).status_code == 201
    assert op.get(f"/api/v1/vms/{vm.name}").status_code == 200
    # the VM goes away behind kvmkit's back and another one takes its name
    vm.dom.undefine()
    micro_guest("g", start=False)
    assert op.get(f"/api/v1/vms/{vm.name}").status_code == 404
    assert op.get("/api/v1/vms").json() == []
    assert op.post(f"/api/v1/vms/{vm.name}/actions/start").status_code == 404
    # granting again binds the grant to the new VM; deleting it through kvmkit removes the grant
    assert root.post(f"/api/v1/users/{name}/grants", json={"vm": vm.name}).status_code == 201
    assert op.get(f"/api/v1/vms/{vm.name}").status_code == 200
    r = root.delete(f"/api/v1/vms/{vm.name}")
    assert wait_task(root, r.json()["id"])["state"] == "succeeded"
    assert root.get(f"/api/v1/users/{name}/grants").json() == []
    # a grant needs a VM that exists
    assert root.post(f"/api/v1/users/{name}/grants", json={"vm": vm.name + "-none"}).status_code == 404


def _volume(conn, name: str) -> str:
    from lxml import etree

    pool = conn.storagePoolLookupByName("default")
    root = etree.Element("volume")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "capacity", unit="MiB").text = "16"
    etree.SubElement(etree.SubElement(root, "target"), "format", type="qcow2")
    return pool.createXML(etree.tostring(root, encoding="unicode"), 0).path()


def test_only_admins_reach_the_host(logged: Server, root: httpx.Client, user, prefix: str, workdir: Path,
                                    micro_guest, conn) -> None:
    _name, op = user("h", "operator")
    taken = _volume(conn, f"{prefix}taken.qcow2")
    micro_guest("owner", start=False, disks=[{"path": taken, "format": "qcow2"}])
    loose = _volume(conn, f"{prefix}loose.qcow2")
    ci = workdir / "user-data"
    ci.write_text("#cloud-config\n")
    cases = [
        ({"disks": [{"path": "/etc/shadow", "format": "raw"}]}, "disks[0].path"),
        ({"disks": [{"device": "cdrom", "path": "/root/secret.iso"}]}, "disks[0].path"),
        ({"kernel": "/boot/vmlinuz", "micro": False}, "kernel"),
        ({"serial_log": "/etc/passwd"}, "serial_log"),
        ({"cloud_init": {"user_data": str(ci)}}, "cloud_init.user_data"),
        ({"cloud_init": {"user_data": "/root/no-such-file"}}, "cloud_init.user_data"),
        ({"nics": [{"type": "direct", "source": "lo"}]}, "nics[0].type"),
        ({"nics": [{"type": "bridge", "source": "virbr0"}]}, "nics[0].type"),
        ({"graphics": {"type": "vnc", "listen": "0.0.0.0", "auto_password": False}}, "graphics.listen"),
        ({"disks": [{"volume": f"{prefix}taken.qcow2", "pool": "default"}]}, "disks[0].volume"),
        ({"disks": [{"volume": f"{prefix}loose.qcow2", "pool": "default"}]}, "disks[0].volume"),
        ({"disks": [{"device": "cdrom", "volume": f"{prefix}taken.qcow2", "pool": "default"}]}, "disks[0].volume"),
    ]
    for extra, field in cases:
        body = {"name": f"{prefix}hp", "micro": True, **extra}
        if "kernel" in extra:
            body.pop("micro")
        r = op.post("/api/v1/vms", json=body)
        assert r.status_code == 403, f"{extra}: {r.status_code} {r.text}"
        assert field in r.json()["error"], (field, r.json())
        if "path" in field or "cloud_init" in field:  # the answer says nothing about the host file
            assert "exist" not in r.text and "bytes" not in r.text and "regular" not in r.text
    assert op.get(f"/api/v1/vms/{prefix}hp").status_code == 404
    assert os.path.exists(loose) and os.path.exists(taken)
    # an admin may (the cloud-init file is checked for the admin, and only then)
    r = root.post("/api/v1/vms", json={"name": f"{prefix}hp", "micro": True,
                                       "cloud_init": {"user_data": "/root/no-such-file"}})
    assert r.status_code == 422 and "does not exist" in r.text
    r = root.post("/api/v1/vms", json={"name": f"{prefix}hp", "micro": True, "memory_mib": "128M",
                                       "graphics": {"type": "vnc", "listen": "0.0.0.0", "password": "pw123456"},
                                       "disks": [{"volume": f"{prefix}loose.qcow2", "pool": "default"}]})
    assert r.status_code == 202, r.text
    assert wait_task(root, r.json()["id"])["state"] == "succeeded"


def test_failed_logins_are_limited_per_user_across_addresses(logged: Server, user) -> None:
    name, _ = user("rl", "viewer")
    with httpx.Client(base_url=logged.url) as c:  # the server trusts 127.0.0.1 as a proxy: many addresses
        codes = [c.post("/api/v1/auth/login", json={"name": name, "password": "wrong-password"},
                        headers={"X-Forwarded-For": f"192.0.2.{i}"}).status_code for i in range(31)]
        assert codes[:30] == [401] * 30 and codes[30] == 429, codes
        r = c.post("/api/v1/auth/login", json={"name": name, "password": "pw-" + name},
                   headers={"X-Forwarded-For": "192.0.2.200"})
        assert r.status_code == 429


def test_session_cookie_and_csrf(logged: Server, user) -> None:
    name, _ = user("ck", "operator")
    with httpx.Client(base_url=logged.url) as c:
        r = c.post("/api/v1/auth/login", json={"name": name, "password": "pw-" + name})
        cookies = {h.split("=", 1)[0]: h for h in r.headers.get_list("set-cookie")}
        session = cookies["kvmkit_session"]
        assert "HttpOnly" in session and re.search(r"SameSite=strict", session, re.I) and "Path=/" in session
        assert "HttpOnly" not in cookies["kvmkit_csrf"]  # the page reads it to send it back
        csrf = r.json()["csrf_token"]
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}):
            assert c.post("/api/v1/tokens", json={"name": "x"}, headers=headers).status_code == 403
            assert c.delete("/api/v1/tokens/1", headers=headers).status_code == 403
        assert c.post("/api/v1/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf}).status_code == 201
        assert c.get("/api/v1/auth/me").status_code == 200  # reads need no CSRF token


def test_secrets_appear_nowhere(logged: Server, root: httpx.Client, prefix: str, workdir: Path, conn) -> None:
    vnc_password = "Vn9pQx2z"
    ci_password = "cloud-init-Secret-77"
    user_data = workdir / "user-data"
    user_data.write_text(f"#cloud-config\npassword: {ci_password}\nchpasswd: {{expire: false}}\n")
    user_data.chmod(0o644)
    name = f"{prefix}sec"
    with httpx.Client(base_url=logged.url) as c:
        login = c.post("/api/v1/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD}).json()
    session = login["token"]
    api_token = root.post("/api/v1/tokens", json={"name": "sec"}).json()["token"]
    r = root.post("/api/v1/vms", json={"name": name, "micro": True, "memory_mib": "256M", "start": True,
                                       "graphics": {"type": "vnc", "password": vnc_password},
                                       "cloud_init": {"user_data": str(user_data)}})
    assert r.status_code == 202, r.text
    task = wait_task(root, r.json()["id"])
    assert task["state"] == "succeeded", task
    shown = root.get(f"/api/v1/vms/{name}").json()
    assert shown["graphics"]["password_set"] is True and shown["graphics"]["listen"] == "127.0.0.1"
    ticket = root.post(f"/api/v1/vms/{name}/console").json()["ticket"]
    ws = connect(f"ws://127.0.0.1:{logged.port}/api/v1/vms/{name}/console/ws?ticket={ticket}", open_timeout=30,
                 legacy=True)
    ws.close()
    with logged.client(api_token) as c:  # a request with the token in a query string, as a careless client might
        c.get("/api/v1/vms", params={"token": api_token, "password": ADMIN_PASSWORD})
    secrets = {"admin password": ADMIN_PASSWORD, "session": session, "csrf": login["csrf_token"],
               "api token": api_token, "ticket": ticket, "vnc password": vnc_password,
               "cloud-init password": ci_password}

    def leaks(text: str) -> list[str]:
        return [what for what, s in secrets.items() if s in text]

    # API answers: the VM, its task, the task list, the audit log, the token list
    answers = [shown, task, root.get("/api/v1/tasks").json(), root.get("/api/v1/audit", params={"limit": 1000}).json(),
               root.get("/api/v1/tokens").json(), root.get("/api/v1/vms").json()]
    assert leaks(json.dumps(answers)) == []
    # the server's log (access log included) and the audit table
    time.sleep(1)  # the access log line of the last request is written after its answer
    log = logged.log_path.read_text(errors="replace")
    assert "GET /api/v1/vms" in log and "console/ws" in log  # the access log is on
    assert leaks(log) == [], [line for line in log.splitlines() if leaks(line)][:5]
    # process command lines: the server's, and QEMU's (libvirt gives QEMU the VNC password over QMP)
    assert logged.proc is not None
    server_cmd = Path(f"/proc/{logged.proc.pid}/cmdline").read_bytes().decode(errors="replace")
    assert leaks(server_cmd) == []
    qemu_pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
    qemu_cmd = Path(f"/proc/{qemu_pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    assert "-vnc" in qemu_cmd and leaks(qemu_cmd) == [], qemu_cmd
    # the database keeps hashes only, and is private
    db = logged.db.removeprefix("sqlite:///")
    for path in (db, db + "-wal", db + "-shm"):
        if os.path.exists(path):
            assert os.stat(path).st_mode & 0o077 == 0, path
    raw = b"".join(Path(p).read_bytes() for p in (db, db + "-wal") if os.path.exists(p)).decode("latin-1")
    assert leaks(raw) == []
    r = root.delete(f"/api/v1/vms/{name}", params={"storage": True, "force": True})
    assert wait_task(root, r.json()["id"])["state"] == "succeeded"


def test_vnc_defaults_to_loopback_with_a_password(root: httpx.Client, prefix: str, conn) -> None:
    import libvirt
    from lxml import etree

    name = f"{prefix}vnc"
    r = root.post("/api/v1/vms", json={"name": name, "micro": True, "memory_mib": "128M", "graphics": {"type": "vnc"}})
    assert r.status_code == 202, r.text
    assert wait_task(root, r.json()["id"])["state"] == "succeeded"
    xml = etree.fromstring(conn.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE).encode())
    g = xml.find("devices/graphics")
    assert g is not None and g.get("passwd") and g.get("listen") == "127.0.0.1"
    shown = root.get(f"/api/v1/vms/{name}").json()["graphics"]
    assert shown["password_set"] is True and g.get("passwd") not in json.dumps(shown)
    r = root.post("/api/v1/vms", json={"name": name + "n", "micro": True, "memory_mib": "128M",
                                       "graphics": {"type": "vnc", "auto_password": False}})
    assert wait_task(root, r.json()["id"])["state"] == "succeeded"
    g = etree.fromstring(conn.lookupByName(name + "n").XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE).encode())
    assert g.find("devices/graphics").get("passwd") is None  # told otherwise
    assert root.get(f"/api/v1/vms/{name}n").json()["graphics"]["password_set"] is False
