"""Authentication: every route but login and health needs a token; login, cookies, CSRF, rate limit,
token revocation. Runs against a real server on SQLite and on PostgreSQL."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.api.conftest import ADMIN_PASSWORD
from tests.api.server import Server

pytestmark = pytest.mark.guest
PUBLIC = {("POST", "/api/v1/auth/login"), ("GET", "/healthz"), ("GET", "/readyz")}


def _routes(server: Server) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/api/v1/openapi.json").json()
    return [(m.upper(), path) for path, ops in spec["paths"].items() for m in ops]


def test_every_route_but_login_and_health_needs_a_token(server: Server) -> None:
    routes = _routes(server)
    assert len(routes) > 25
    assert set(routes) >= PUBLIC
    with server.client() as anon, server.client("kvk_not-a-real-token") as bogus:
        for method, path in routes:
            url = re.sub(r"\{[^}]+\}", "1", path)
            if (method, path) in PUBLIC:
                continue
            for c in (anon, bogus):
                r = c.request(method, url, json={})
                assert r.status_code == 401, f"{method} {path} answered {r.status_code} without a valid token"
                assert r.json()["code"] == "unauthorized"
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    assert httpx.get(f"{server.url}/readyz").json()["checks"] == {"libvirt": "ok", "database": "ok",
                                                                  "events": "connected"}


def test_login_sets_strict_httponly_cookie_and_cookie_changes_need_csrf(server: Server, make_user) -> None:
    name, _ = make_user("op", "operator")
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/api/v1/auth/login", json={"name": name, "password": "pass-" + name})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"] == name and body["role"] == "operator" and body["token"].startswith("kvk_")
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("kvmkit_session="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert "Secure" not in cookie  # plain HTTP here; Secure is set under TLS
        assert c.get("/api/v1/auth/me").json()["name"] == name  # the cookie authenticates reads
        # a change through the cookie without the CSRF token is refused, with it accepted
        assert c.post("/api/v1/tokens", json={"name": "x"}).status_code == 403
        r = c.post("/api/v1/tokens", json={"name": "x"}, headers={"x-csrf-token": body["csrf_token"]})
        assert r.status_code == 201, r.text
        # form post with the csrf_token field
        r = c.post("/api/v1/auth/logout", data={"csrf_token": "wrong"})
        assert r.status_code == 403
        assert c.post("/api/v1/auth/logout", data={"csrf_token": body["csrf_token"]}).status_code == 204
    # the bearer token from login is revoked by logout too (it is the same session)
    with server.client(body["token"]) as c2:
        assert c2.get("/api/v1/auth/me").status_code == 401


def test_form_login_and_rate_limit(server: Server, make_user) -> None:
    name, _ = make_user("rl", "viewer")
    with httpx.Client(base_url=server.url) as c:
        r = c.post("/api/v1/auth/login", data={"name": name, "password": "pass-" + name})
        assert r.status_code == 200, r.text
        for _ in range(5):
            assert c.post("/api/v1/auth/login", json={"name": name, "password": "wrong"}).status_code == 401
        r = c.post("/api/v1/auth/login", json={"name": name, "password": "pass-" + name})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        # another user from the same address is not affected
        assert c.post("/api/v1/auth/login", json={"name": "admin", "password": ADMIN_PASSWORD}).status_code == 200


def test_tokens_are_stored_hashed_and_revocable(server: Server, make_user, admin: httpx.Client) -> None:
    name, c = make_user("tk", "viewer")
    r = c.post("/api/v1/tokens", json={"name": "mine"})
    assert r.status_code == 201
    tok = r.json()
    with server.client(tok["token"]) as t:
        assert t.get("/api/v1/auth/me").json()["name"] == name
        assert c.delete(f"/api/v1/tokens/{tok['id']}").status_code == 204
        assert t.get("/api/v1/auth/me").status_code == 401
    listed = c.get("/api/v1/tokens").json()
    assert all("token" not in x for x in listed) and any(x["id"] == tok["id"] and x["revoked"] for x in listed)
    # the secret is nowhere in the database, only its sha256
    if server.db.startswith("sqlite"):
        raw = server.db.removeprefix("sqlite:///")
        import hashlib
        import sqlite3

        with sqlite3.connect(raw) as db:
            hashes = {row[0] for row in db.execute("SELECT token_hash FROM tokens")}
        assert hashlib.sha256(tok["token"].encode()).hexdigest() in hashes
        assert tok["token"] not in hashes
    # a viewer cannot revoke someone else's token
    admin_tokens = admin.get("/api/v1/tokens").json()
    other = next(x for x in admin_tokens if x["user"] == "admin")
    assert c.delete(f"/api/v1/tokens/{other['id']}").status_code == 404
