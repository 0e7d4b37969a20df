"""POST /api/v1/vms with cloud-init given inline, by an operator, in the server's own app on libvirt's test driver
with a real SQLite database: the inline fields pass the policy and the spec, and the seed is rendered (the task
reaches its cloud-init-seed step; the test driver cannot upload a volume, so the task ends there and undoes the
create — the booted proof: tests/images/test_cloud_init.py shows the inline fields render the seed their host-file
twins render, which tests/service/guests/test_debian_guest.py boots, with an inline key); a host-file field answers
403 naming the field and its inline twin; a bad key answers 422 at its field; no answer (the task, the task list,
the audit log, the VM list) and no database row holds the user-data or the password."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from lxml import etree

with warnings.catch_warnings():  # starlette 0.5x asks for httpx2 here; httpx is what the project has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from kvmkit.api.app import create_app
from kvmkit.service.access import auth

pytestmark = pytest.mark.fast
PUB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP5adS3KQexugxXNgDWX3bqfPdY/cG2kGb8vahWfVtOF op@kvmkit"
MARKER = "inline-user-data-marker-4711"
PASSWORD = "Inline-Guest-pw-9"


@pytest.fixture()
def app(tmp_path: Path, prefix: str) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], Path]]:
    """The app on test:///default (with a 'default' pool, as kvmkit's seed needs), an admin and an operator;
    yields (client, {role: auth header}, the database file)."""
    conn = libvirt.open("test:///default")
    pool_xml = etree.Element("pool", type="dir")
    etree.SubElement(pool_xml, "name").text = "default"
    (tmp_path / "pool").mkdir()
    etree.SubElement(etree.SubElement(pool_xml, "target"), "path").text = str(tmp_path / "pool")
    try:
        pool = conn.storagePoolLookupByName("default")
        made = False
    except libvirt.libvirtError:
        pool = conn.storagePoolCreateXML(etree.tostring(pool_xml, encoding="unicode"), 0)  # transient
        made = True
    db = tmp_path / "kvmkit.db"
    application = create_app(f"sqlite:///{db}", "test:///default", workers=1)
    try:
        with TestClient(application, base_url="https://testserver") as client:
            st = application.state.kvmkit
            headers = {}
            for role in ("admin", "operator"):
                with st.store.session() as s:
                    auth.add_user(s, f"{prefix}{role}", role, f"{role}-pass-123")
                r = client.post("/api/v1/auth/login", json={"name": f"{prefix}{role}", "password": f"{role}-pass-123"})
                assert r.status_code == 200, r.text
                headers[role] = {"Authorization": f"Bearer {r.json()['token']}"}
            client.cookies.clear()  # bearer tokens only (no session cookie, no CSRF)
            yield client, headers, db
    finally:
        if made:
            pool.destroy()
        conn.close()


def _wait(client: TestClient, h: dict[str, str], task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        task = client.get(f"/api/v1/tasks/{task_id}", headers=h).json()
        if task["state"] not in ("queued", "running") or time.monotonic() > deadline:
            return task
        time.sleep(0.1)


def test_an_operator_personalises_a_vm_inline_and_nothing_echoes_it(app, prefix: str) -> None:
    client, h, db = app
    name = f"{prefix}ci"
    body = {"name": name, "memory_mib": "64M", "disks": [{"size": "16M"}], "nics": [],
            "cloud_init": {"hostname": "web-1", "ssh_authorized_keys": [PUB], "password": PASSWORD, "eject": True,
                           "user_data_text": f"#cloud-config\nwrite_files:\n  - path: /etc/m\n    content: {MARKER}\n"}}
    r = client.post("/api/v1/vms", json=body, headers=h["operator"])
    assert r.status_code == 202, r.text
    task = _wait(client, h["operator"], r.json()["id"])
    steps = [s["name"] for s in task["steps"]]
    assert "cloud-init-seed" in steps, task  # policy and spec passed, the seed's files were rendered
    assert task["state"] == "succeeded" or "virStorageVolUpload" in (task["error"] or ""), task
    assert client.get(f"/api/v1/vms/{name}", headers=h["admin"]).status_code == 404  # undone: nothing half-made
    answers = [task, client.get("/api/v1/tasks", headers=h["admin"]).json(),
               client.get("/api/v1/audit", params={"limit": 1000}, headers=h["admin"]).json(),
               client.get("/api/v1/vms", headers=h["admin"]).json()]
    shown = json.dumps(answers)
    assert MARKER not in shown and PASSWORD not in shown and "write_files" not in shown
    actions = {(e["action"], e["user"]) for e in answers[2]}  # the request and its task are in the audit log
    assert {("POST /api/v1/vms", f"{prefix}operator"), ("vm.create", f"{prefix}operator")} <= actions, actions
    raw = b"".join(p.read_bytes() for p in db.parent.glob("kvmkit.db*")).decode("latin-1")
    assert MARKER not in raw and PASSWORD not in raw


@pytest.mark.parametrize("field, twin", [("user_data", "user_data_text"), ("ssh_key", "ssh_authorized_keys"),
                                         ("password_file", "password"), ("meta_data", "hostname")])
def test_host_file_fields_are_refused_naming_the_inline_twin(app, prefix: str, field: str, twin: str) -> None:
    client, h, _ = app
    r = client.post("/api/v1/vms", json={"name": f"{prefix}hf", "micro": True,
                                         "cloud_init": {field: "/etc/shadow"}}, headers=h["operator"])
    assert r.status_code == 403, r.text
    err = r.json()
    assert f"cloud_init.{field}" in err["error"] and f"cloud_init.{twin}" in err["hint"], err
    assert "shadow" not in err["hint"] and "exist" not in r.text


def test_bad_inline_fields_answer_422_at_the_field(app, prefix: str) -> None:
    client, h, _ = app
    cases = [({"ssh_authorized_keys": ["-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n"]},
              "ssh_authorized_keys", "PRIVATE key"),
             ({"user_data_text": "#cloud-config\n- not\n- a mapping\n"}, "user_data_text", "not a YAML mapping"),
             ({"user_data_text": "#cloud-config\n", "user_data": "/x"}, None, "not both")]
    for ci, loc, words in cases:
        r = client.post("/api/v1/vms", json={"name": f"{prefix}bad", "micro": True, "cloud_init": ci},
                        headers=h["admin"])
        assert r.status_code == 422, r.text
        fields = r.json()["fields"]
        assert any(words in f["msg"] and (loc is None or loc in f["loc"]) for f in fields), fields
        assert "b3BlbnNzaC1rZXk" not in r.text and "a mapping" not in r.text
