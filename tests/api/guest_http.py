"""Driving micro-guests over the API only: create, wait for serial-console markers (GET .../console/log),
run a shell command on the guest's console (the console WebSocket), delete. Used by the API guest tests so
that each can be chained into the issue-17 scenario (everything over HTTP)."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tests.api.conftest import wait_task
from tests.api.server import Server


def ok_task(client: httpx.Client, response: httpx.Response, timeout: float = 300) -> dict[str, Any]:
    """The finished task of a 202 answer; fails naming the task's error unless it succeeded."""
    assert response.status_code == 202, response.text
    task = wait_task(client, response.json()["id"], timeout=timeout)
    assert task["state"] == "succeeded", task["error"]
    return task


def create_micro(client: httpx.Client, name: str, *, start: bool = True, timeout: float = 300,
                 **spec: Any) -> dict[str, Any]:
    """POST /api/v1/vms with ``micro: true`` (128 MiB unless told); returns the finished task."""
    body = {"name": name, "micro": True, "memory_mib": 128, "start": start, **spec}
    return ok_task(client, client.post("/api/v1/vms", json=body), timeout=timeout)


def console_text(client: httpx.Client, vm: str) -> str:
    r = client.get(f"/api/v1/vms/{vm}/console/log")
    return str(r.json()["text"]) if r.status_code == 200 else ""


def wait_console(client: httpx.Client, vm: str, pattern: str, *, timeout: float = 180, after: int = 0) -> re.Match[str]:
    """Poll the VM's serial log over the API until ``pattern`` appears past character ``after``."""
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while True:
        text = console_text(client, vm)
        match = rx.search(text, after)
        if match:
            return match
        if time.monotonic() > deadline:
            raise TimeoutError(f"{pattern!r} not in the serial log of {vm} after {timeout:.0f} s:\n{text[-1500:]}")
        time.sleep(0.5)


def console_run(server: Server, token: str, vm: str, command: str, *, timeout: float = 90) -> str:
    """Type ``command`` on the VM's serial shell through /api/v1/vms/{name}/console/ws and return what it
    printed (between markers the typed line itself cannot match)."""
    from websockets.sync.client import connect

    tag = secrets.token_hex(4)
    rx = re.compile(rf"KT-OUT-{tag}<(.*?)>KT-END", re.S)
    line = f"echo \"KT-OUT-\"\"{tag}<$({command} | tr '\\n' ' ')>KT-\"END\n"
    r = httpx.post(f"{server.url}/api/v1/vms/{vm}/console", json={"kind": "serial"},
                   headers={"Authorization": f"Bearer {token}"}, verify=False)
    assert r.status_code in (200, 201), r.text  # a single-use console ticket: tokens never go into a URL
    url = server.url.replace("http", "ws", 1) + f"{r.json()['ws_path']}?ticket={r.json()['ticket']}"
    seen = ""
    deadline = time.monotonic() + timeout
    with connect(url, open_timeout=30, max_size=None) as ws:
        next_send = 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_send:  # the shell may not listen yet: type it again now and then
                ws.send(("\n" + line).encode())
                next_send = time.monotonic() + 15
            try:
                chunk = ws.recv(timeout=1)
            except TimeoutError:
                continue
            seen += chunk.decode(errors="replace") if isinstance(chunk, bytes) else chunk
            match = rx.search(seen)
            if match:
                return match.group(1)
    raise TimeoutError(f"no answer to {command!r} on {vm}'s console in {timeout:.0f} s:\n{seen[-1500:]}")


@contextmanager
def deleting(client: httpx.Client, *names: str) -> Iterator[list[str]]:
    """Delete these VMs (and any added to the yielded list) with their storage through the API afterwards,
    so their serial logs go too; the prefix sweep catches whatever this misses."""
    vms = list(names)
    try:
        yield vms
    finally:
        for vm in reversed(vms):
            r = client.delete(f"/api/v1/vms/{vm}", params={"storage": True, "force": True})
            if r.status_code == 202:
                wait_task(client, r.json()["id"], timeout=180)
