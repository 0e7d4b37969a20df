"""API fixtures: one PostgreSQL cluster per session, and a real server per database backend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.server import PostgresCluster, Server

ADMIN_PASSWORD = "admin-pass-123"


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


def new_db_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A fresh database: 'sqlite' (a file in the server's data directory) or one in our PostgreSQL cluster."""
    if backend == "postgresql":
        return str(request.getfixturevalue("pg_cluster").new_database())
    return "sqlite"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def server(backend: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A running server (per backend) with user 'admin' (password ADMIN_PASSWORD)."""
    srv = Server(new_db_url(backend, request))
    srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    srv.start()
    yield srv
    srv.cleanup()


@pytest.fixture(scope="session")
def admin(server: Server) -> Iterator[httpx.Client]:
    with server.client(server.token("admin")) as c:
        yield c


@pytest.fixture()
def make_user(server: Server, admin: httpx.Client, prefix: str):
    """Factory: a user named with the test's prefix, with the given role; returns (name, client)."""
    clients: list[httpx.Client] = []

    def make(suffix: str, role: str, **extra: Any) -> tuple[str, httpx.Client]:
        name = f"{prefix}{suffix}"
        r = admin.post("/api/v1/users", json={"name": name, "role": role, "password": "pass-" + name, **extra})
        assert r.status_code == 201, r.text
        tok = admin.post("/api/v1/tokens", json={"name": "t", "user": name}).json()["token"]
        c = server.client(tok)
        clients.append(c)
        return name, c

    yield make
    for c in clients:
        c.close()


def wait_task(client: httpx.Client, task_id: str, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/tasks/{task_id}")
        assert r.status_code == 200, f"GET /api/v1/tasks/{task_id}: {r.status_code} {r.text}"
        task = r.json()
        if task["state"] not in ("queued", "running"):
            return task
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still {task['state']} after {timeout} s: {task}")
        time.sleep(0.3)
