"""Which change requests empty which cache (api/middleware/audit.py -> ServerState.changed), in the server's own app on
libvirt's test driver with a real SQLite database: every answered change request empties the cache of callers
and moves the access generation on; only requests that may change a VM mark the VM list stale — a login, a
logout, tokens, users and groups do not, so the first VM list after a login is served without a rebuild."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():  # starlette 0.5x asks for httpx2 here; httpx is what the project has
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from kvmkit.api.app import create_app
from kvmkit.api.middleware.audit import _changes_vms
from kvmkit.service.access import auth

pytestmark = pytest.mark.fast
PASSWORD = "change-pass-123"


@pytest.fixture()
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    app = create_app(f"sqlite:///{tmp_path}/kvmkit.db", "test:///default", workers=1)
    with TestClient(app, base_url="https://testserver") as client:
        st = app.state.kvmkit
        with st.store.session() as s:
            auth.add_user(s, "admin", "admin", PASSWORD)
        yield client, st


def _marks(st: Any) -> tuple[int, int, int]:
    """(VM list invalidations, token cache clears, access generation)."""
    return st.vm_list._seq, st.tokens.generation, st.access_generation


def test_login_tokens_users_and_groups_keep_the_vm_list(app_client: tuple[TestClient, Any]) -> None:
    client, st = app_client
    assert client.get("/api/v1/vms").status_code == 401
    vms0, tok0, gen0 = _marks(st)
    r = client.post("/api/v1/auth/login", json={"name": "admin", "password": PASSWORD})
    assert r.status_code == 200, r.text
    csrf = {"X-CSRF-Token": r.json()["csrf_token"]} if "csrf_token" in r.json() else {}
    vms1, tok1, gen1 = _marks(st)
    assert vms1 == vms0, "a login marked the VM list stale"
    assert tok1 > tok0 and gen1 > gen0  # the cache of callers is emptied as before
    assert client.get("/api/v1/vms").status_code == 200
    steps = [("POST", "/api/v1/tokens", {"name": "script"}), ("POST", "/api/v1/users",
             {"name": "op1", "role": "operator", "password": "op1-pass-123"}),
             ("PATCH", "/api/v1/users/op1", {"disabled": True}), ("POST", "/api/v1/groups", {"name": "g1"}),
             ("POST", "/api/v1/groups/g1/members", {"user": "op1"}),
             ("DELETE", "/api/v1/groups/g1/members/op1", None), ("DELETE", "/api/v1/users/op1", None)]
    for method, path, body in steps:
        before = _marks(st)
        r = client.request(method, path, json=body, headers=csrf)
        assert r.status_code < 300, f"{method} {path}: {r.text}"
        after = _marks(st)
        assert after[0] == before[0], f"{method} {path} marked the VM list stale"
        assert after[1] > before[1], f"{method} {path} kept cached callers"
    token_id = client.get("/api/v1/tokens").json()[0]["id"]
    before = _marks(st)
    assert client.delete(f"/api/v1/tokens/{token_id}", headers=csrf).status_code in (200, 204)
    assert _marks(st)[0] == before[0] and _marks(st)[1] > before[1]  # a revoke drops the cached callers
    before = _marks(st)
    r = client.patch("/api/v1/vms/test", json={"autostart": True}, headers=csrf)  # the test driver's VM
    assert r.status_code == 200, r.text
    assert _marks(st)[0] > before[0], "a VM change kept the VM list"
    before = _marks(st)
    assert client.post("/api/v1/auth/logout", headers=csrf).status_code in (200, 204)
    assert _marks(st)[0] == before[0] and _marks(st)[1] > before[1]


def test_only_the_listed_areas_are_exempt() -> None:
    for path in ("/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/tokens", "/api/v1/tokens/3",
                 "/api/v1/users/bob/grants", "/api/v1/groups/g/members/bob"):
        assert not _changes_vms(path), path
    for path in ("/api/v1/vms", "/api/v1/vms/users", "/api/v1/usersx", "/api/v1/pools/default/volumes",
                 "/api/v1/networks/default", "/api/v1/tasks/1/cancel", "/api/v1/authx"):
        assert _changes_vms(path), path
