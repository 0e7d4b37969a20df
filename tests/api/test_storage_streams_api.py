"""Streamed uploads over HTTP when things go wrong, and who may do what with storage: a body cut off in the
middle (raw socket) leaves no volume (or an existing one marked incomplete), a cancel stops an upload,
progress shows on the event stream, hostile images and oversized uploads are refused with a 4xx naming the
fix, and roles decide who reads, uploads, downloads, deletes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import wait_task
from tests.api.server import EventReader, Server
from tests.api.storage_client import (
    API,
    Users,
    content_url,
    done,
    download,
    gated,
    make_pool,
    ok,
    qcow2_image,
    raw_put,
    sha,
    upload_tasks,
    wait_upload_task,
)

pytestmark = pytest.mark.guest
MiB = 1024 ** 2


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    u = Users(srv)
    try:
        yield u
    finally:
        u.close()
        srv.cleanup()


@pytest.fixture()
def pool(users: Users, prefix: str, workdir: Path) -> str:
    return make_pool(users.admin, f"{prefix}pool", workdir / "pool")


def _files(workdir: Path) -> set[str]:
    return {p.name for p in (workdir / "pool").iterdir()}


def _token(client: httpx.Client) -> str:
    return client.headers["authorization"].split()[1]


def test_cut_off_upload_leaves_no_volume(users: Users, pool: str, workdir: Path) -> None:
    admin = users.admin
    before = _files(workdir)
    # announce 8 MiB, send 3 MiB, hang up
    raw_put(users.server, _token(admin), content_url(pool, "cut.raw") + "?format=raw",
            {"Content-Length": str(8 * MiB), "Content-Type": "application/octet-stream"},
            os.urandom(3 * MiB), read_answer=False)
    task = wait_upload_task(admin, pool, "cut.raw")
    assert task["state"] == "failed" and "cut off" in task["error"] and f"of {8 * MiB} bytes" in task["error"]
    assert admin.get(f"{API}/pools/{pool}/volumes/cut.raw").status_code == 404
    assert _files(workdir) == before
    # into an existing volume: its old content is partly overwritten, so it is marked incomplete
    data = os.urandom(4 * MiB)
    ok(admin.put(content_url(pool, "old.raw"), params={"format": "raw"}, content=data), 201)
    raw_put(users.server, _token(admin), content_url(pool, "old.raw"), {"Content-Length": str(4 * MiB)},
            os.urandom(2 * MiB), read_answer=False)
    deadline = time.monotonic() + 120
    while len(upload_tasks(admin, pool, "old.raw")) < 2 or upload_tasks(admin, pool, "old.raw")[0]["state"] in (
            "queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    failed = upload_tasks(admin, pool, "old.raw")[0]
    assert failed["state"] == "failed" and "cut off" in failed["error"]
    info = ok(admin.get(f"{API}/pools/{pool}/volumes/old.raw"))
    assert "cut off" in info["incomplete"]
    assert [v.get("incomplete") for v in ok(admin.get(f"{API}/pools/{pool}/volumes"))] == [info["incomplete"]]
    # a complete upload clears the mark
    ok(admin.put(content_url(pool, "old.raw"), content=data), 200)
    assert ok(admin.get(f"{API}/pools/{pool}/volumes/old.raw"))["incomplete"] is None
    assert download(admin, pool, "old.raw")[0] == data


def test_upload_progress_shows_on_the_event_stream_and_cancel_stops_it(users: Users, pool: str,
                                                                       workdir: Path) -> None:
    admin = users.admin
    events = EventReader(users.server, _token(admin))
    try:
        target = f"volume:{pool}/slow.raw"

        def progress_seen() -> None:  # the barrier: the server reports progress strictly between 0 and 100
            deadline = time.monotonic() + 120
            while not any(e.get("task", {}).get("target") == target and 0 < e["task"]["percent"] < 100
                          for e in list(events.events)):
                assert time.monotonic() < deadline, events.events[-5:]
                time.sleep(0.05)

        parts = [os.urandom(2 * MiB), os.urandom(6 * MiB)]
        r = admin.put(content_url(pool, "slow.raw"), params={"format": "raw"},
                      headers={"Content-Length": str(8 * MiB)}, content=gated(parts, {1: progress_seen}))
        task = ok(r, 201)
        seen = [e["task"] for e in events.events if e.get("task", {}).get("target") == target]
        assert seen[-1]["state"] == "succeeded" and task["result"]["sha256"] == sha(b"".join(parts))
        assert any(t["state"] == "running" and 0 < t["percent"] < 100 and "MiB" in t["message"] for t in seen)

        # cancel between chunks: the server stops, deletes the volume it made and answers 409
        target = f"volume:{pool}/gone.raw"

        def cancel() -> None:
            progress_seen()
            task_id = next(e["task"]["id"] for e in events.events if e.get("task", {}).get("target") == target)
            ok(admin.post(f"{API}/tasks/{task_id}/cancel"))

        parts = [os.urandom(2 * MiB)] + [os.urandom(MiB) for _ in range(30)]
        try:
            r = admin.put(content_url(pool, "gone.raw"), params={"format": "raw"},
                          headers={"Content-Length": str(32 * MiB)}, content=gated(parts, {1: cancel}))
            assert r.status_code == 409 and r.json()["code"] == "cancelled", r.text
        except httpx.HTTPError:
            pass  # the server answered before the client finished sending and closed the connection
        task = wait_upload_task(admin, pool, "gone.raw")
        assert task["state"] == "cancelled"
        assert admin.get(f"{API}/pools/{pool}/volumes/gone.raw").status_code == 404
    finally:
        events.close()


def test_refused_uploads_are_4xx_and_leave_nothing(users: Users, pool: str, workdir: Path) -> None:
    admin = users.admin
    small = os.urandom(MiB)
    ok(admin.put(content_url(pool, "small.raw"), params={"format": "raw"}, content=small), 201)
    before = _files(workdir)

    def refused(name: str, status: int, needle: str, params: dict[str, str] | None = None,
                content: Any = b"x" * 4096, headers: dict[str, str] | None = None) -> dict[str, Any]:
        r = admin.put(content_url(pool, name), params=params or {}, content=content, headers=headers or {})
        assert r.status_code == status and needle in r.text, (name, r.status_code, r.text[:500])
        body = r.json()
        # kvmkit's errors carry error/hint/code; a query parameter pydantic refuses (format=vdi) answers with
        # the app's validation-error shape
        assert (body.get("error") and body.get("code")) or body.get("detail"), body
        return dict(body)

    # larger than the volume: refused before a byte is read, the volume untouched; a client that waits for
    # "100 Continue" gets the refusal without sending the body
    refused("small.raw", 413, "larger than volume 'small.raw'", content=os.urandom(2 * MiB))
    answer = raw_put(users.server, _token(admin), content_url(pool, "small.raw"),
                     {"Content-Length": str(2 * MiB), "Expect": "100-continue"}, b"")
    assert answer.startswith("HTTP/1.1 413"), answer
    # ... and when the length is not announced (chunked), refused once it passes the capacity
    body = refused("small.raw", 413, "more than volume 'small.raw' can take",
                   content=iter([os.urandom(MiB // 2)] * 3))
    assert body["task"]["state"] == "failed"
    assert "passed" in ok(admin.get(f"{API}/pools/{pool}/volumes/small.raw"))["incomplete"]
    ok(admin.put(content_url(pool, "small.raw"), content=small), 200)
    assert download(admin, pool, "small.raw")[0] == small
    # hostile or mislabelled images: refused from their header, before a volume exists
    evil = workdir / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", str(evil)],
                   check=True)
    refused("evil.qcow2", 422, "backing file (/etc/hostname)", {"format": "qcow2"}, evil.read_bytes())
    data_file = qcow2_image(workdir / "df.qcow2", "16M", "-o", f"data_file={workdir / 'df.data'}", pattern=False)
    refused("df.qcow2", 422, "external data file", {"format": "qcow2"}, data_file)
    plain = qcow2_image(workdir / "plain.qcow2", "16M", pattern=False)
    refused("plain.raw", 422, "is a qcow2 image, not raw", {"format": "raw"}, plain)
    refused("plain.qcow2", 422, "is a raw image, not qcow2", {"format": "qcow2"}, os.urandom(MiB))
    refused("noformat.raw", 422, "say which format")
    refused("bad.raw", 422, "format", {"format": "vdi"})
    refused("a..b", 422, "invalid volume name", {"format": "raw"})
    refused("x.raw", 422, "sha256", {"format": "raw", "sha256": "abc"})
    # a wrong digest: the bytes are stored, compared, and the volume removed again
    body = refused("sum.raw", 422, "not the expected", {"format": "raw", "sha256": sha(b"other")})
    assert body["code"] == "sha256_mismatch" and body["task"]["kind"] == "volume.upload"
    answer = raw_put(users.server, _token(admin), content_url(pool, "nolen.raw") + "?format=raw", {}, b"")
    assert answer.startswith("HTTP/1.1 411"), answer
    assert _files(workdir) == before
    assert admin.get(f"{API}/pools/{pool}/volumes/nolen.raw").status_code == 404


def test_bad_volume_input_names_the_field(users: Users, pool: str, workdir: Path) -> None:
    admin = users.admin
    before = _files(workdir)
    for body, field in (({"name": "../x", "size": "1G"}, "name"), ({"name": "a/b", "size": "1G"}, "name"),
                        ({"name": "v", "size": "-1G"}, "size"), ({"name": "v", "size": 0}, "size"),
                        ({"name": "v", "size": "2P"}, "size"), ({"name": "v", "size": "1G", "format": "vdi"}, "format"),
                        ({"name": "v", "size": "12 parsecs"}, "size")):
        r = admin.post(f"{API}/pools/{pool}/volumes", json=body)
        assert r.status_code == 422 and field in r.text, (body, r.text)  # the body's field, named
    r = admin.post(f"{API}/pools/{pool}/volumes", json={"name": "a..b", "size": "1G"})
    assert r.status_code == 422 and "'..'" in r.json()["hint"]
    r = admin.post(f"{API}/pools/{pool}/volumes", json={"name": "big", "size": "900T"})
    assert r.status_code == 422 and "free" in r.json()["error"]
    assert admin.post(f"{API}/pools/{pool}x/volumes", json={"name": "v", "size": "1G"}).status_code == 404
    assert _files(workdir) == before


def test_storage_roles(users: Users, pool: str, workdir: Path) -> None:
    admin, op, op2, viewer = users.admin, users.operator, users.operator2, users.viewer
    mine = ok(op.post(f"{API}/pools/{pool}/volumes", json={"name": "op.raw", "size": 1, "format": "raw"}), 201)
    assert mine["owner"] == "st-oper"
    data = os.urandom(MiB)
    up = ok(op.put(content_url(pool, "op-up.raw"), params={"format": "raw"}, content=data), 201)
    assert up["result"]["owner"] == "st-oper"
    assert ok(op.get(f"{API}/pools/{pool}/volumes/op-up.raw"))["owner"] == "st-oper"
    assert download(op, pool, "op-up.raw")[0] == data
    ok(admin.post(f"{API}/pools/{pool}/volumes", json={"name": "adm.raw", "size": 1, "format": "raw"}), 201)
    # viewers read volumes (not their bytes) and change nothing
    assert {v["name"] for v in ok(viewer.get(f"{API}/pools/{pool}/volumes"))} == {"op.raw", "op-up.raw", "adm.raw"}
    assert ok(viewer.get(f"{API}/pools/{pool}/volumes/op.raw"))["format"] == "raw"
    for method, url, kw in (
            ("PUT", content_url(pool, "v.raw"), {"params": {"format": "raw"}, "content": data}),
            ("GET", content_url(pool, "op.raw"), {}),
            ("POST", f"{API}/pools/{pool}/volumes", {"json": {"name": "v.raw", "size": 1}}),
            ("DELETE", f"{API}/pools/{pool}/volumes/op.raw", {}),
            ("PATCH", f"{API}/pools/{pool}/volumes/op.raw", {"json": {"capacity": "2M"}}),
            ("POST", f"{API}/pools/{pool}/volumes/op.raw/actions/wipe", {}),
            ("POST", f"{API}/pools/{pool}/volumes/op.raw/clone", {"json": {"name": "v2.raw"}}),
            ("POST", f"{API}/images/convert", {"json": {"source": {"pool": pool, "volume": "op.raw"},
                                                        "dest": {"pool": pool, "volume": "v3.raw"}, "format": "raw"}}),
            ("POST", f"{API}/pools/{pool}/actions/refresh", {})):
        assert viewer.request(method, url, **kw).status_code == 403, (method, url)
    # another operator may read and copy them, but not overwrite, resize, wipe or delete them
    assert download(op2, pool, "op.raw")[0] == b"\0" * MiB
    done(op2, op2.post(f"{API}/pools/{pool}/volumes/op.raw/clone", json={"name": "op2.raw"}))
    for method, url, kw in (
            ("PUT", content_url(pool, "op.raw"), {"content": data}),
            ("DELETE", f"{API}/pools/{pool}/volumes/op.raw", {}),
            ("PATCH", f"{API}/pools/{pool}/volumes/op.raw", {"json": {"capacity": "2M"}}),
            ("POST", f"{API}/pools/{pool}/volumes/op.raw/actions/wipe", {}),
            ("DELETE", f"{API}/pools/{pool}/volumes/adm.raw", {})):
        r = op2.request(method, url, **kw)
        assert r.status_code == 403 and "only the volumes it created" in r.json()["error"], (method, url, r.text)
    # operators: no pools, no templates to mark, no host paths
    assert op.post(f"{API}/templates", json={"pool": pool, "volume": "op.raw"}).status_code == 403
    assert op.get(f"{API}/images/info", params={"path": "/etc/hostname"}).status_code == 403
    r = op.post(f"{API}/images/convert", json={"source": {"path": "/etc/shadow"}, "dest": {"pool": pool,
                                                                                          "volume": "s.raw"},
                                               "format": "raw"})
    assert r.status_code == 403 and "host paths" in r.json()["error"]
    assert op.patch(f"{API}/pools/{pool}", json={"autostart": True}).status_code == 403
    # the owner and admins may
    ok(op.patch(f"{API}/pools/{pool}/volumes/op.raw", json={"capacity": "2M"}))
    ok(op.delete(f"{API}/pools/{pool}/volumes/op.raw"))
    ok(admin.delete(f"{API}/pools/{pool}/volumes/op2.raw"))
    assert ok(admin.get(f"{API}/images/info", params={"path": str(workdir / "pool" / "adm.raw")}))["format"] == "raw"
    # the audit log names who uploaded what
    entries = ok(admin.get(f"{API}/audit", params={"user": "st-oper", "limit": 100}))
    assert any(e["action"] == "volume.upload" and e["target"] == f"volume:{pool}/op-up.raw" and e["result"] == "ok"
               for e in entries), entries[:5]


def test_download_of_a_busy_volume_is_409_and_a_gone_client_fails_the_task(users: Users, pool: str) -> None:
    admin = users.admin
    data = os.urandom(64 * MiB)  # far more than socket buffers and the server's queue hold
    ok(admin.put(content_url(pool, "big.raw"), params={"format": "raw"}, content=data), 201)
    with admin.stream("GET", content_url(pool, "big.raw")) as r:
        assert r.status_code == 200
        task_id = r.headers["x-kvmkit-task"]
        first = next(r.iter_bytes())
        assert first and data.startswith(first)
        busy = admin.put(content_url(pool, "big.raw"), content=b"x")
        assert busy.status_code == 409 and busy.json()["task_id"] == task_id
    # the client hung up after the first chunk: the task fails saying so, the volume is unchanged
    task = wait_task(admin, task_id)
    assert task["state"] == "failed" and "went away" in task["error"], task
    got, down = download(admin, pool, "big.raw")
    assert got == data and down["result"]["sha256"] == sha(data)


def test_a_server_killed_mid_upload_cleans_up_when_it_starts_again(prefix: str, workdir: Path) -> None:
    """SIGKILL during an upload into a new volume and into an existing one: at the next start the task is
    failed as interrupted, the new volume deleted, the existing one marked incomplete."""
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    token = srv.token("admin")
    try:
        with srv.client(token) as admin:
            pool = make_pool(admin, f"{prefix}pool", workdir / "pool")
            ok(admin.put(content_url(pool, "old.raw"), params={"format": "raw"}, content=os.urandom(4 * MiB)), 201)
        for name, params in (("new.raw", {"format": "raw"}), ("old.raw", {})):
            target = f"volume:{pool}/{name}"
            with srv.client(token) as admin:

                def receiving(admin: httpx.Client = admin, target: str = target) -> None:
                    deadline = time.monotonic() + 120
                    while not any(t["target"] == target and t["state"] == "running" and t["percent"] > 0
                                  for t in ok(admin.get(f"{API}/tasks", params={"limit": 20}))):
                        assert time.monotonic() < deadline
                        time.sleep(0.1)
                    srv.kill()

                with pytest.raises(httpx.HTTPError):
                    admin.put(content_url(pool, name), params=params, headers={"Content-Length": str(4 * MiB)},
                              content=gated([os.urandom(2 * MiB), os.urandom(2 * MiB)], {1: receiving}))
            srv.start()  # (on a new port)
        with srv.client(token) as admin:
            tasks = upload_tasks(admin, pool, "new.raw") + upload_tasks(admin, pool, "old.raw")
            failed = [t for t in tasks if t["state"] == "failed"]
            assert len(failed) == 2 and all("interrupted" in t["error"] for t in failed), tasks
            assert any("deleted volume" in t["error"] for t in failed)
            assert admin.get(f"{API}/pools/{pool}/volumes/new.raw").status_code == 404
            assert "server stopped" in ok(admin.get(f"{API}/pools/{pool}/volumes/old.raw"))["incomplete"]
    finally:
        srv.cleanup()


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_slow_download_does_not_fill_the_servers_memory(users: Users, pool: str) -> None:
    """libvirt queues what a download's reader has not taken yet; the server asks for 8 MiB at a time, so a
    client reading slowly (here: 64 KiB, then a look at the server's memory) never has the volume buffered."""
    admin = users.admin
    data = os.urandom(4 * MiB) * 40  # 160 MiB
    ok(admin.put(content_url(pool, "slow.raw"), params={"format": "raw"}, content=data), 201)
    assert users.server.proc is not None
    pid = users.server.proc.pid
    base = _rss_mib(pid)
    peak = base
    got = bytearray()
    with admin.stream("GET", content_url(pool, "slow.raw")) as r:
        task_id = r.headers["x-kvmkit-task"]
        for piece in r.iter_raw(64 * 1024):
            got += piece
            peak = max(peak, _rss_mib(pid))
    assert bytes(got) == data and wait_task(admin, task_id)["result"]["sha256"] == sha(data)
    assert peak - base < 64, f"the server grew by {peak - base:.0f} MiB during a 160 MiB download"
