"""The store: Alembic migrations build the schema on SQLite and PostgreSQL; passwords are argon2 hashes,
tokens sha256 and revocable; the login rate limiter; task recovery marks interrupted tasks failed."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, select

from kvmkit.errors import Conflict, InvalidInput
from kvmkit.service.access import auth
from kvmkit.service.tasks.runner import RECOVERY, TaskRunner
from kvmkit.store.db import Store
from kvmkit.store.models import Task, Token, User

TABLES = {"users", "groups", "group_members", "vm_grants", "tokens", "tasks", "task_steps", "audit",
          "alembic_version"}


@pytest.mark.fast
def test_migrations_create_the_schema_and_are_idempotent(store: Store) -> None:
    assert set(inspect(store.engine).get_table_names()) >= TABLES
    Store(str(store.engine.url.render_as_string(hide_password=False)))  # upgrading again is a no-op


@pytest.mark.fast
def test_users_passwords_tokens(store: Store) -> None:
    with store.session() as s:
        u = auth.add_user(s, "alice", "operator", "correct horse")
        assert u.password_hash and u.password_hash.startswith("$argon2id$")
        with pytest.raises(Conflict):
            auth.add_user(s, "alice", "viewer")
        with pytest.raises(InvalidInput):
            auth.add_user(s, "bob", "root")
        with pytest.raises(InvalidInput):
            auth.add_user(s, "a/b", "viewer")
        _tok, secret, _ = auth.create_token(s, u, "ci")
    with store.session() as s:
        row = s.scalar(select(Token).where(Token.name == "ci"))
        assert row is not None and row.token_hash == auth.sha256(secret) and secret not in row.token_hash
        p = auth.authenticate(s, secret)
        assert (p.name, p.role, p.granted) == ("alice", "operator", None)
        auth.revoke_token(s, row.id, p)
    with store.session() as s, pytest.raises(auth.Unauthorized):
        auth.authenticate(s, secret)
    with store.session() as s:
        alice = s.scalar(select(User).where(User.name == "alice"))
        assert alice is not None and auth.verify_password(alice.password_hash, "correct horse")
        assert not auth.verify_password(alice.password_hash, "wrong")
        auth.grant(s, "vm1", user=alice)
        assert alice.vm_scope == "granted" and auth.granted_vms(s, alice) == frozenset({"vm1"})


@pytest.mark.fast
def test_login_rate_limit_per_user_and_address(store: Store) -> None:
    limiter = auth.RateLimiter(limit=5, window=60)
    with store.session() as s:
        auth.add_user(s, "carol", "viewer", "password-1")
    for _ in range(5):
        with store.session() as s, pytest.raises(auth.Unauthorized):
            auth.login(s, limiter, "carol", "nope", "10.0.0.1")
    with store.session() as s, pytest.raises(auth.TooManyAttempts):
        auth.login(s, limiter, "carol", "password-1", "10.0.0.1")
    with store.session() as s:
        user, secret, csrf = auth.login(s, limiter, "carol", "password-1", "10.0.0.2")
        assert user.name == "carol" and secret.startswith("kvk_") and csrf


@pytest.mark.fast
def test_recovery_fails_interrupted_tasks_and_runs_the_handler(store: Store) -> None:
    with store.session() as s:
        s.add(Task(id="t-1", kind="test.kind", target="vm:x", state="running", intent={"vm": "x"}))
        s.add(Task(id="t-2", kind="test.kind", target="vm:y", state="succeeded"))
    seen = []
    RECOVERY["test.kind"] = lambda conn, task, steps: seen.append(task["id"]) or ["removed thing"]
    try:
        out = TaskRunner(store).recover(conn=object())
    finally:
        del RECOVERY["test.kind"]
    assert seen == ["t-1"] and [t["id"] for t in out] == ["t-1"]
    with store.session() as s:
        t1 = s.get(Task, "t-1")
        assert t1 is not None and t1.state == "failed"
        assert t1.error and "interrupted" in t1.error and "removed thing" in t1.error
        t2 = s.get(Task, "t-2")
        assert t2 is not None and t2.state == "succeeded"
