"""The cache of authenticated callers: unit behaviour (TTL, token expiry, clears beat in-flight fills), and
against a real server (SQLite and PostgreSQL) that a token revoked, logged out or whose user is disabled
through the API stops working at once, and one revoked by another process within the TTL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from kvmkit.api.deps import _lookup
from kvmkit.api.token_cache import DEFAULT_TTL_S, TokenCache
from kvmkit.service.access.auth import Principal, Unauthorized, add_user, create_token
from kvmkit.store.db import Store
from kvmkit.store.models import Token
from tests.api.server import Server

P = Principal(name="u", role="viewer", user_id=1, token_id=7)


class _Clock:
    """The token cache's view of time: ``monotonic()`` (entry ages) moves only when a test moves it, so no
    pause of a loaded machine between two lines can age an entry; ``time()`` (token expiry) is the real one."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    time = staticmethod(time.time)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    from kvmkit.api import token_cache

    c = _Clock()
    monkeypatch.setattr(token_cache, "time", c)
    return c


@pytest.mark.fast
def test_entries_live_for_the_ttl_and_never_past_the_token_expiry(clock: _Clock) -> None:
    cache = TokenCache(ttl=0.2)
    key = cache.key("kvk_secret")
    assert key != "kvk_secret" and len(key) == 64  # keyed by the hash, not the secret
    assert cache.get(key) is None
    cache.put(key, P, None, cache.generation)
    assert cache.get(key) is P
    clock.now += 0.19
    assert cache.get(key) is P
    clock.now += 0.02
    assert cache.get(key) is None and len(cache) == 0
    cache.put(key, P, datetime.now(UTC) - timedelta(seconds=1), cache.generation)  # an expired session
    assert cache.get(key) is None
    cache.put(key, P, datetime.now(UTC).replace(tzinfo=None) + timedelta(hours=1), cache.generation)  # naive: UTC
    assert cache.get(key) is P


@pytest.mark.fast
def test_a_clear_wins_over_a_lookup_that_read_the_database_before_it() -> None:
    cache = TokenCache()
    key = cache.key("kvk_x")
    generation = cache.generation  # a request starts reading the token row ...
    cache.clear()  # ... a revoke is answered meanwhile ...
    cache.put(key, P, None, generation)  # ... and its result must not come back
    assert cache.get(key) is None
    cache.put(key, P, None, cache.generation)
    assert cache.get(key) is P
    cache.clear()
    assert cache.get(key) is None


@pytest.mark.fast
def test_entries_past_half_their_ttl_are_due_for_renewal(clock: _Clock) -> None:
    cache = TokenCache(ttl=0.4)
    key = cache.key("kvk_r")
    cache.put(key, P, None, cache.generation)
    assert cache.lookup(key) == (P, False)
    clock.now += 0.25
    assert cache.lookup(key) == (P, True)  # still served, renewed in the background by the caller
    cache.drop(key)
    assert cache.lookup(key) == (None, False)


class _State:
    """What deps._lookup needs of the server's state: the real store and a token cache."""

    def __init__(self, store: Store, ttl: float = DEFAULT_TTL_S) -> None:
        self.store, self.tokens = store, TokenCache(ttl=ttl)


def _counting_token_reads(store: Store) -> list[str]:
    from sqlalchemy import event

    reads: list[str] = []

    @event.listens_for(store.engine, "before_cursor_execute")
    def count(_conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "tokens" in statement:
            reads.append(statement)

    return reads


@pytest.fixture()
def store_with_token(tmp_path) -> tuple[Store, str, int]:
    store = Store(f"sqlite:///{tmp_path / 'kvmkit.db'}")
    with store.session() as s:
        user = add_user(s, "tc-user", "viewer", "pass-123456")
        tok, secret, _ = create_token(s, user)
        token_id = tok.id
    return store, secret, token_id


@pytest.mark.fast
def test_many_requests_that_miss_at_once_share_one_database_lookup(store_with_token) -> None:
    store, secret, _ = store_with_token
    st = _State(store)
    reads = _counting_token_reads(store)
    key = st.tokens.key(secret)

    async def fifty() -> list[Principal]:
        return await asyncio.gather(*(asyncio.shield(_lookup(st, key, secret)) for _ in range(50)))  # type: ignore[arg-type]

    found = asyncio.run(fifty())
    assert {p.name for p in found} == {"tc-user"} and len(found) == 50
    assert len(reads) == 1, reads  # one SELECT of the token row (its user is loaded by id)
    assert st.tokens.get(key) is not None and not st.tokens.in_flight


@pytest.mark.fast
def test_a_renewal_that_finds_the_token_revoked_drops_it(store_with_token) -> None:
    store, secret, token_id = store_with_token
    st = _State(store)
    key = st.tokens.key(secret)
    asyncio.run(_lookup_once(st, key, secret))
    assert st.tokens.get(key) is not None
    with store.session() as s:  # revoked behind the server's back (the CLI writes the database)
        s.get(Token, token_id).revoked_at = datetime.now(UTC)  # type: ignore[union-attr]
    with pytest.raises(Unauthorized):
        asyncio.run(_lookup_once(st, key, secret))
    assert st.tokens.get(key) is None and not st.tokens.in_flight


async def _lookup_once(st: _State, key: str, secret: str) -> Principal:
    return await _lookup(st, key, secret)  # type: ignore[arg-type]


@pytest.mark.fast
def test_the_cache_is_bounded() -> None:
    cache = TokenCache(max_entries=3)
    for i in range(10):
        cache.put(cache.key(str(i)), P, None, cache.generation)
        assert len(cache) <= 3


def _user_token(admin: httpx.Client, user: str) -> tuple[int, str]:
    r = admin.post("/api/v1/tokens", json={"name": "t", "user": user})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["token"]


@pytest.mark.guest
def test_revoked_tokens_logouts_and_disabled_users_stop_at_once(server: Server, admin: httpx.Client,
                                                                make_user, prefix: str) -> None:
    name, _ = make_user("tok", "viewer")
    for _ in range(3):  # each time: cached by a successful request, then revoked, then refused
        token_id, secret = _user_token(admin, name)
        with server.client(secret) as c:
            assert c.get("/api/v1/vms").status_code == 200
            assert c.get("/api/v1/vms").status_code == 200
            assert admin.delete(f"/api/v1/tokens/{token_id}").status_code == 204
            r = c.get("/api/v1/vms")
            assert r.status_code == 401, r.text
            assert r.json()["code"] == "unauthorized"

    with server.client() as anon:  # a login session, then logout with it
        login = anon.post("/api/v1/auth/login", json={"name": name, "password": "pass-" + name})
        assert login.status_code == 200, login.text
    with server.client(login.json()["token"]) as c:
        assert c.get("/api/v1/vms").status_code == 200
        assert c.post("/api/v1/auth/logout").status_code == 204
        assert c.get("/api/v1/vms").status_code == 401

    _, secret = _user_token(admin, name)
    with server.client(secret) as c:
        assert c.get("/api/v1/auth/me").json()["role"] == "viewer"
        assert admin.patch(f"/api/v1/users/{name}", json={"role": "operator"}).status_code == 200
        assert c.get("/api/v1/auth/me").json()["role"] == "operator"  # a role change applies at once
        assert admin.patch(f"/api/v1/users/{name}", json={"disabled": True}).status_code == 200
        assert c.get("/api/v1/vms").status_code == 401
        assert admin.patch(f"/api/v1/users/{name}", json={"disabled": False}).status_code == 200
        assert c.get("/api/v1/vms").status_code == 200


@pytest.mark.guest
def test_a_token_revoked_by_another_process_stops_within_the_ttl(server: Server, admin: httpx.Client,
                                                                 make_user) -> None:
    name, _ = make_user("cli", "viewer")
    token_id, secret = _user_token(admin, name)
    with server.client(secret) as c:
        assert c.get("/api/v1/auth/me").status_code == 200  # cached from now on
        server.cli("token", "revoke", str(token_id))  # the CLI writes the database directly
        t0 = time.monotonic()
        while True:
            sent = time.monotonic() - t0
            if c.get("/api/v1/auth/me").status_code == 401:
                break
            assert sent < DEFAULT_TTL_S + 1, "a token revoked elsewhere still works"
            time.sleep(0.1)
