"""Groups of users over HTTP (admins) and through `kvmkit user group ...` on the same database: a member taken
out of a group (DELETE /api/v1/groups/{name}/members/{user}) loses the group's VMs at its next request."""

from __future__ import annotations

import httpx
import pytest

from tests.api.server import Server

pytestmark = pytest.mark.guest


def _names(c: httpx.Client) -> list[str]:
    r = c.get("/api/v1/vms")
    assert r.status_code == 200, r.text
    return [v["name"] for v in r.json()]


def test_removing_a_member_takes_the_groups_vms_away(server: Server, admin: httpx.Client, make_user, micro_guest,
                                                    prefix: str) -> None:
    vm = micro_guest("grpvm", start=False).name
    group = f"{prefix}ops"
    user, client = make_user("member", "operator", vm_scope="granted")
    assert admin.post("/api/v1/groups", json={"name": group}).status_code == 201
    assert admin.post(f"/api/v1/groups/{group}/members", json={"user": user}).status_code == 201
    assert admin.post(f"/api/v1/groups/{group}/grants", json={"vm": vm}).status_code == 201
    assert _names(client) == [vm]
    _other, operator = make_user("notadmin", "operator")
    assert operator.delete(f"/api/v1/groups/{group}/members/{user}").status_code == 403
    assert _names(client) == [vm]

    r = admin.delete(f"/api/v1/groups/{group}/members/{user}")
    assert r.status_code == 204, r.text
    assert _names(client) == []  # at once: the removal was a change this server answered
    assert client.get(f"/api/v1/vms/{vm}").status_code == 404
    listed = {g["name"]: g for g in admin.get("/api/v1/groups").json()}
    assert listed[group] == {"name": group, "members": [], "grants": [vm]}
    r = admin.delete(f"/api/v1/groups/{group}/members/{user}")
    assert r.status_code == 404 and "not a member" in r.json()["error"], r.text
    assert admin.delete(f"/api/v1/groups/{group}/members/{prefix}nobody").status_code == 404
    assert admin.delete(f"/api/v1/groups/{prefix}nogroup/members/{user}").status_code == 404
    assert admin.delete(f"/api/v1/groups/{group}").status_code == 204


def test_the_cli_manages_groups_in_the_servers_database(server: Server, admin: httpx.Client, make_user,
                                                        micro_guest, prefix: str) -> None:
    vm = micro_guest("grpcli", start=False).name
    group = f"{prefix}cli"
    user, _client = make_user("climember", "viewer", vm_scope="granted")
    assert server.cli("user", "group", "add", group) == {"name": group, "members": [], "grants": []}
    assert server.cli("user", "group", "add-member", group, user)["members"] == [user]
    assert server.cli("user", "group", "grant", group, vm)["grants"] == [vm]
    api_view = {g["name"]: g for g in admin.get("/api/v1/groups").json()}[group]
    cli_view = {g["name"]: g for g in server.cli("user", "group", "list")}[group]
    assert api_view == cli_view == {"name": group, "members": [user], "grants": [vm]}
    assert server.cli("user", "group", "remove-member", group, user)["members"] == []
    with pytest.raises(RuntimeError, match="is not a member of group"):
        server.cli("user", "group", "remove-member", group, user)
    assert server.cli("user", "group", "revoke", group, vm)["grants"] == []
    assert server.cli("user", "group", "delete", group) == {"deleted": group}
    assert group not in [g["name"] for g in admin.get("/api/v1/groups").json()]
