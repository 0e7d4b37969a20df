"""Counts of answered API requests by method, route template and status (for ``kvmkit_api_requests_total``).

The route is the template (``/api/v1/vms/{name}``), never the raw path, so the number of series stays bounded
by the number of routes; requests that match no route count under ``unmatched``.
"""

from __future__ import annotations

import threading

UNMATCHED = "unmatched"


class RequestCounter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}

    def add(self, method: str, route: str | None, status: int) -> None:
        key = (method, route or UNMATCHED, str(status))
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + 1

    def snapshot(self) -> list[tuple[tuple[str, str, str], int]]:
        """``((method, route, status), count)`` pairs, sorted."""
        with self._lock:
            return sorted(self._counts.items())
