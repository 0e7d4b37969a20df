"""Helpers for the storage API tests: a server of the module's own, users by role, pools made over HTTP,
uploads from bytes, generators and raw sockets."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.api.conftest import wait_task
from tests.api.server import Server

API = "/api/v1"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ok(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text[:800]}"
    return r.json()


def done(client: httpx.Client, r: httpx.Response, state: str = "succeeded") -> dict[str, Any]:
    """The finished task a 202 answer started; asserts its final state."""
    task = wait_task(client, ok(r, 202)["id"])
    assert task["state"] == state, task
    return task


class Users:
    """Clients of one server by role: ``admin``, ``operator``, ``operator2``, ``viewer``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.admin = server.client(server.token("admin"))
        self._made: list[httpx.Client] = [self.admin]
        self.operator = self.make("st-oper", "operator")
        self.operator2 = self.make("st-oper2", "operator")
        self.viewer = self.make("st-viewer", "viewer")

    def make(self, name: str, role: str) -> httpx.Client:
        ok(self.admin.post(f"{API}/users", json={"name": name, "role": role, "password": "pass-" + name + "-x"}), 201)
        token = ok(self.admin.post(f"{API}/tokens", json={"name": "t", "user": name}), 201)["token"]
        client = self.server.client(token)
        self._made.append(client)
        return client

    def close(self) -> None:
        for c in self._made:
            c.close()


def make_pool(admin: httpx.Client, name: str, target: Path) -> str:
    """A running dir pool defined, built and started over the API."""
    task = done(admin, admin.post(f"{API}/pools", json={"name": name, "type": "dir", "target": str(target),
                                                         "build": True, "start": True}))
    assert task["result"]["state"] == "running", task
    return name


def content_url(pool: str, vol: str) -> str:
    return f"{API}/pools/{pool}/volumes/{vol}/content"


def qcow2_image(path: Path, size: str = "64M", *opts: str, pattern: bool = True) -> bytes:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *opts, str(path), size], check=True)
    if pattern:
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 1M 2M", str(path)], check=True,
                       capture_output=True)
    return path.read_bytes()


def download(client: httpx.Client, pool: str, vol: str) -> tuple[bytes, dict[str, Any]]:
    """The volume's bytes and the finished download task."""
    with client.stream("GET", content_url(pool, vol)) as r:
        assert r.status_code == 200, r.read()[:500]
        data = b"".join(r.iter_bytes())
        assert int(r.headers["content-length"]) == len(data)
        task_id = r.headers["x-kvmkit-task"]
    return data, wait_task(client, task_id)


def raw_put(server: Server, token: str, path: str, head: dict[str, str], body: bytes,
            read_answer: bool = True) -> str:
    """A PUT over a plain socket: the given headers and ``body``, then (when ``read_answer`` is false) the
    socket is closed at once, whatever the headers announced: a client cut off mid-upload."""
    url = urlsplit(server.url)
    lines = [f"PUT {path} HTTP/1.1", f"Host: {url.netloc}", f"Authorization: Bearer {token}",
             *(f"{k}: {v}" for k, v in head.items()), "", ""]
    with socket.create_connection((url.hostname, url.port), timeout=60) as s:
        s.sendall("\r\n".join(lines).encode())
        s.sendall(body)
        if not read_answer:
            s.shutdown(socket.SHUT_RDWR)
            return ""
        answer = b""
        while b"\r\n\r\n" not in answer:
            piece = s.recv(65536)
            if not piece:
                break
            answer += piece
        return answer.decode(errors="replace")


def upload_tasks(admin: httpx.Client, pool: str, vol: str) -> list[dict[str, Any]]:
    tasks = ok(admin.get(f"{API}/tasks", params={"limit": 200}))
    return [t for t in tasks if t["kind"] == "volume.upload" and t["target"] == f"volume:{pool}/{vol}"]


def wait_upload_task(admin: httpx.Client, pool: str, vol: str, timeout: float = 120) -> dict[str, Any]:
    """The (only) upload task of that volume, once finished."""
    deadline = time.monotonic() + timeout
    while True:
        tasks = upload_tasks(admin, pool, vol)
        if tasks and tasks[0]["state"] not in ("queued", "running"):
            return wait_task(admin, tasks[0]["id"])
        if time.monotonic() > deadline:
            raise TimeoutError(f"no finished upload task for {pool}/{vol}: {tasks}")
        time.sleep(0.2)


def gated(parts: list[bytes], gates: dict[int, Any]) -> Iterator[bytes]:
    """A request body that yields ``parts`` in turn and, before part i, waits for ``gates[i]()`` to return
    (a barrier on what the server shows, never a sleep)."""
    for i, part in enumerate(parts):
        if i in gates:
            gates[i]()
        yield part
