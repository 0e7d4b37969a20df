"""Fixtures of the fault and abuse suite: a real ``kvmkit serve`` that tests may kill and restart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness import CrashServer


@pytest.fixture(scope="module")
def crash_server() -> Iterator[CrashServer]:
    """One SQLite-backed server for a module whose tasks pause after every journalled step; tests SIGKILL it
    and start it again on the same database and data directory."""
    srv = CrashServer(step_delay=2.0)
    yield srv
    srv.cleanup()
