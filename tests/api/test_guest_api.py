"""The guest routes over HTTP: exec and password through the agent, the seed eject task, guest disks offline.

Guest tier (micro-guest, no agent, no appliance): who may call them, and what is refused before anything
runs. On the shared Debian guest (tests/service/guests/test_debian_guest.py): exec and passwords while it
runs, and its disk written and read over HTTP (libguestfs) while it is shut off.
"""

from __future__ import annotations

import httpx
import pytest

from kvmkit.images import qemu_img
from tests.api.conftest import wait_task


@pytest.mark.guest
def test_viewers_get_no_exec_password_or_guest_files(micro_guest, make_user) -> None:
    vm = micro_guest("v", start=False).name
    _, viewer = make_user("viewer", "viewer")
    calls = [("POST", f"/api/v1/vms/{vm}/exec", {"json": {"command": ["id"]}}),
             ("POST", f"/api/v1/vms/{vm}/password", {"json": {"user": "root", "password": "x"}}),
             ("POST", f"/api/v1/vms/{vm}/seed/eject", {"json": {}}),
             ("GET", f"/api/v1/vms/{vm}/guest/inspect", {}), ("GET", f"/api/v1/vms/{vm}/guest/ls", {}),
             ("GET", f"/api/v1/vms/{vm}/guest/df", {}),
             ("GET", f"/api/v1/vms/{vm}/guest/cat", {"params": {"path": "/etc/shadow"}}),
             ("GET", f"/api/v1/vms/{vm}/guest/copy-out", {"params": {"path": "/root"}}),
             ("POST", f"/api/v1/vms/{vm}/guest/copy-in", {"params": {"path": "/root/x"}, "content": b"x"})]
    for method, url, kw in calls:
        r = viewer.request(method, url, **kw)
        assert r.status_code == 403, (url, r.text)
        assert "needs role operator" in r.json()["error"]


@pytest.mark.guest
def test_exec_needs_a_connected_agent_and_the_password_is_never_echoed(micro_guest, make_user,
                                                                        admin: httpx.Client) -> None:
    vm = micro_guest("x").name  # running, without an agent channel
    op_name, op = make_user("op", "operator")
    r = op.post(f"/api/v1/vms/{vm}/exec", json={"command": ["sh", "-c", "exit 3"], "timeout": 5})
    assert r.status_code == 409 and "guest-agent channel" in r.json()["error"], r.text
    r = op.post(f"/api/v1/vms/{vm}/password", json={"user": "root", "password": "never-echoed-1"})
    assert r.status_code == 409 and "never-echoed-1" not in r.text
    r = op.post(f"/api/v1/vms/{vm}/exec", json={"command": [], "timeout": 5})
    assert r.status_code == 422
    r = op.post(f"/api/v1/vms/{vm}/seed/eject", json={"wait": 0})
    task = wait_task(op, r.json()["id"])
    assert task["state"] == "failed" and "no cloud-init seed" in task["error"]
    # every attempt is audited under the operator's name, without the password or the command's arguments
    entries = admin.get("/api/v1/audit", params={"user": op_name, "limit": 100}).json()
    actions = {e["action"]: e for e in entries}
    assert actions["POST /api/v1/vms/{name}/exec"]["target"] == vm, entries
    assert actions["POST /api/v1/vms/{name}/password"]["result"] == "invalid", entries
    assert "never-echoed-1" not in str(entries) and "exit 3" not in str(entries)


@pytest.mark.guest
def test_guest_files_of_a_running_vm_need_readonly_and_copy_in_never(micro_guest, make_user, workdir) -> None:
    disk = workdir / "d.qcow2"
    qemu_img.create(disk, "qcow2", 64 * 1024**2)
    disk.chmod(0o666)
    vm = micro_guest("r", disks=[{"path": str(disk), "format": "qcow2"}]).name
    _, op = make_user("op", "operator")
    for url, kw in ((f"/api/v1/vms/{vm}/guest/ls", {"params": {"path": "/"}}), (f"/api/v1/vms/{vm}/guest/df", {}),
                    (f"/api/v1/vms/{vm}/guest/cat", {"params": {"path": "/etc/hostname"}})):
        r = op.get(url, **kw)
        assert r.status_code == 409 and "readonly" in r.json()["hint"], r.text
    r = op.post(f"/api/v1/vms/{vm}/guest/copy-in", params={"path": "/root/x"}, content=b"data")
    assert r.status_code == 409 and "shut it down" in r.json()["hint"]
    r = op.get(f"/api/v1/vms/{vm}/guest/ls", params={"path": "etc"})
    assert r.status_code in (409, 422)


@pytest.mark.guest
def test_copy_in_to_a_template_a_linked_clone_uses_is_refused(micro_guest, admin: httpx.Client, workdir) -> None:
    base = workdir / "base.qcow2"
    qemu_img.create(base, "qcow2", 64 * 1024**2)
    overlay = workdir / "clone.qcow2"
    qemu_img.create(overlay, "qcow2", 0, backing=str(base), backing_fmt="qcow2")
    for f in (base, overlay):
        f.chmod(0o666)
    tmpl = micro_guest("tmpl", start=False, disks=[{"path": str(base), "format": "qcow2"}]).name
    clone = micro_guest("clone", start=False, disks=[{"path": str(overlay), "format": "qcow2"}]).name
    r = admin.post(f"/api/v1/vms/{tmpl}/guest/copy-in", params={"path": "/root/x"}, content=b"data")
    assert r.status_code == 409 and clone in r.json()["error"], r.text


@pytest.mark.guest
def test_the_openapi_document_types_the_guest_routes(admin: httpx.Client) -> None:
    doc = admin.get("/api/v1/openapi.json").json()
    paths = doc["paths"]
    for path, method in (("/api/v1/vms/{name}/exec", "post"), ("/api/v1/vms/{name}/guest/ls", "get"),
                         ("/api/v1/vms/{name}/guest/df", "get"), ("/api/v1/vms/{name}/guest/inspect", "get"),
                         ("/api/v1/vms/{name}/password", "post")):
        schema = paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]
        assert "$ref" in schema, (path, schema)
    body = doc["components"]["schemas"]["PasswordBody"]["properties"]["password"]
    assert body.get("writeOnly") or body.get("format") == "password"
