"""Login cannot tell known names from unknown ones: every failed login runs one argon2 verification,
whether the user exists, is disabled, has no password or gave a wrong one (counted, not timed); and the
limits per name+address, per address and per name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from kvmkit.service.access import auth
from kvmkit.store.db import Store

pytestmark = pytest.mark.fast


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(f"sqlite:///{tmp_path}/kvmkit.db")
    with s.session() as db:
        auth.add_user(db, "known", "viewer", "known-pass-1")
        auth.add_user(db, "off", "viewer", "off-pass-123")
        auth.add_user(db, "nopass", "viewer")
        auth.get_user(db, "off").disabled = True
    yield s
    s.engine.dispose()


@pytest.fixture()
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every argon2 verification; the real one still runs."""
    seen: list[str] = []
    real = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        seen.append(str(hash)[:10])
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    return seen


@pytest.mark.parametrize("name", ["known", "unknown", "off", "nopass"])
def test_every_failed_login_costs_one_argon2_verification(store: Store, verifications: list[str], name: str) -> None:
    limiter = auth.RateLimiter()
    with store.session() as s, pytest.raises(auth.Unauthorized) as err:
        auth.login(s, limiter, name, "wrong-password", "10.0.0.9")
    assert err.value.message == "wrong user name or password"  # the same answer for all four
    assert len(verifications) == 1 and verifications[0].startswith("$argon2id")


def test_a_disabled_user_with_the_right_password_is_refused_the_same_way(store: Store,
                                                                         verifications: list[str]) -> None:
    with store.session() as s, pytest.raises(auth.Unauthorized, match="wrong user name or password"):
        auth.login(s, auth.RateLimiter(), "off", "off-pass-123", "10.0.0.9")
    assert len(verifications) == 1


def test_limits_per_address_and_per_name(store: Store) -> None:
    limiter = auth.RateLimiter(limit=5, address_limit=8, name_limit=12)
    for i in range(8):  # eight names from one address
        with store.session() as s, pytest.raises(auth.Unauthorized):
            auth.login(s, limiter, f"n{i}", "x-wrong-pass", "10.0.0.1")
    with store.session() as s, pytest.raises(auth.TooManyAttempts):
        auth.login(s, limiter, "known", "known-pass-1", "10.0.0.1")  # the address is throttled
    with store.session() as s:
        auth.login(s, limiter, "known", "known-pass-1", "10.0.0.2")  # another address is not
    for i in range(12):  # one name from twelve addresses
        with store.session() as s, pytest.raises(auth.Unauthorized):
            auth.login(s, limiter, "known", "x-wrong-pass", f"10.1.0.{i}")
    with store.session() as s, pytest.raises(auth.TooManyAttempts):
        auth.login(s, limiter, "known", "known-pass-1", "10.2.0.1")
