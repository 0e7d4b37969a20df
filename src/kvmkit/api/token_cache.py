"""A short in-memory cache of authenticated callers, keyed by the sha256 of their token.

Without it every request runs a database query (and a ``last_used_at`` write) to check its token. An
entry lives ``ttl`` seconds (and never past the token's own expiry). Every change request this server
handles (revoking a token, logging out, changing or deleting a user, a grant, a group ...) clears the
whole cache when it answers (see middleware/audit.py), so such a change applies at once here. A change made by
another process (``kvmkit token revoke`` / ``kvmkit user ...`` on the same database, or a second server)
applies here within ``ttl`` seconds.

Fills are guarded by a generation counter: a lookup that read the database before a clear cannot put
its (possibly revoked) result back after the clear.

Under load no request waits for the database once its token is known: an entry past half its ``ttl`` is
still served while one background lookup renews it (``due``), and the lookups of many requests that miss
at once are shared (deps.principal keeps one in flight per token). A renewal that finds the token gone
drops the entry, so the ``ttl`` bound above holds as before.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from kvmkit.service.access.auth import Principal, sha256

DEFAULT_TTL_S = 5.0
MAX_ENTRIES = 10_000


class TokenCache:
    def __init__(self, ttl: float = DEFAULT_TTL_S, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        # token hash -> (principal, monotonic deadline, token expiry as a UTC timestamp or None)
        self._entries: dict[str, tuple[Principal, float, float | None]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        self.in_flight: dict[str, Any] = {}  # token hash -> its running database lookup (api.deps; event loop only)

    @staticmethod
    def key(secret: str) -> str:
        return sha256(secret)

    def get(self, key: str) -> Principal | None:
        """The cached principal for a token hash, or None (unknown, too old, or the token expired)."""
        return self.lookup(key)[0]

    def lookup(self, key: str) -> tuple[Principal | None, bool]:
        """(the cached principal or None, whether the entry is past half its ttl and should be renewed)."""
        entry = self._entries.get(key)
        if entry is None:
            return None, False
        principal, deadline, expires = entry
        now = time.monotonic()
        if now >= deadline or (expires is not None and time.time() >= expires):
            self.drop(key, entry)
            return None, False
        return principal, now >= deadline - self.ttl / 2

    def drop(self, key: str, entry: object = None) -> None:
        """Forget a token (only ``entry`` when given: a newer fill stays)."""
        with self._lock:
            if key in self._entries and (entry is None or self._entries[key] is entry):
                del self._entries[key]

    def put(self, key: str, principal: Principal, expires_at: datetime | None, generation: int) -> None:
        """Remember a principal looked up at ``generation`` (dropped if the cache was cleared since)."""
        expires = None
        if expires_at is not None:
            expires = (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)).timestamp()
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[key] = (principal, time.monotonic() + self.ttl, expires)

    def clear(self) -> None:
        with self._lock:
            self.generation += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
