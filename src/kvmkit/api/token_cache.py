"""A short in-memory cache of authenticated callers, keyed by the sha256 of their token.

Without it every request runs a database query (and a ``last_used_at`` write) to check its token. An
entry lives ``ttl`` seconds (and never past the token's own expiry). Every change request this server
handles (revoking a token, logging out, changing or deleting a user, a grant, a group ...) clears the
whole cache when it answers (see audit_mw), so such a change applies at once here. A change made by
another process (``kvmkit token revoke`` / ``kvmkit user ...`` on the same database, or a second server)
applies here within ``ttl`` seconds.

Fills are guarded by a generation counter: a lookup that read the database before a clear cannot put
its (possibly revoked) result back after the clear.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from kvmkit.service.auth import Principal, sha256

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

    @staticmethod
    def key(secret: str) -> str:
        return sha256(secret)

    def get(self, key: str) -> Principal | None:
        """The cached principal for a token hash, or None (unknown, too old, or the token expired)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        principal, deadline, expires = entry
        if time.monotonic() >= deadline or (expires is not None and time.time() >= expires):
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            return None
        return principal

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
