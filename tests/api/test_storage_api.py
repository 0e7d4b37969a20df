"""Storage over HTTP only, against a real ``kvmkit serve`` on qemu:///system: pools (every type defined,
a dir pool through its whole life), volumes (create, clone, resize, wipe, delete), streamed upload and
download of qcow2 and raw images (identical bytes, sha256 on both sides), convert, templates, the image
builder, and the roles that guard them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.server import Server
from tests.api.storage_client import API, Users, content_url, done, download, make_pool, ok, qcow2_image, sha

pytestmark = pytest.mark.guest
MiB = 1024 ** 2


@pytest.fixture(scope="module")
def users() -> Iterator[Users]:
    """One SQLite-backed server for this module, with an admin, two operators and a viewer."""
    srv = Server("sqlite")
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    u = Users(srv)
    try:
        yield u
    finally:
        u.close()
        srv.cleanup()


def test_pool_life_over_http(users: Users, prefix: str, workdir: Path) -> None:
    admin = users.admin
    name = f"{prefix}pool"
    make_pool(admin, name, workdir / "pool")
    assert (workdir / "pool").is_dir()
    info = ok(admin.get(f"{API}/pools/{name}"))
    assert info["type"] == "dir" and info["state"] == "running" and info["target"] == str(workdir / "pool")
    assert name in [p["name"] for p in ok(users.viewer.get(f"{API}/pools"))]
    assert ok(admin.patch(f"{API}/pools/{name}", json={"autostart": True}))["autostart"] is True
    assert ok(admin.patch(f"{API}/pools/{name}", json={"autostart": False}))["autostart"] is False
    assert ok(admin.post(f"{API}/pools/{name}/actions/refresh"))["volumes"] == 0
    # delete and undefine need a stopped pool: 409 saying so, nothing done
    r = admin.delete(f"{API}/pools/{name}")
    assert r.status_code == 409 and "stop it first" in r.json()["hint"]
    assert ok(admin.post(f"{API}/pools/{name}/actions/stop"))["state"] == "inactive"
    assert ok(admin.delete(f"{API}/pools/{name}/storage"))["deleted"] is True
    assert not (workdir / "pool").exists()
    task = done(admin, admin.post(f"{API}/pools/{name}/actions/build"))
    assert task["kind"] == "pool.build" and (workdir / "pool").is_dir()
    assert ok(admin.delete(f"{API}/pools/{name}"))["undefined"] is True
    assert admin.get(f"{API}/pools/{name}").json()["code"] == "not_found"


def test_every_pool_type_is_defined_from_its_body(users: Users, prefix: str, workdir: Path) -> None:
    """Each of the five types defines (not builds: no NFS, iSCSI or device-mapper here) with the source its
    body names, and a body missing its type's source is refused at once, naming the field."""
    admin = users.admin
    bodies = {
        "fs": {"target": str(workdir / "fs"), "source_dev": "/dev/kvmkit-test-none", "source_format": "xfs"},
        "netfs": {"target": str(workdir / "nfs"), "source_host": "nfs1.invalid", "source_path": "/export/vms"},
        "logical": {"source_name": f"{prefix}vg"},
        "iscsi": {"source_host": "san1.invalid", "source_path": "iqn.2024-01.invalid:t1"},
        "dir": {"target": str(workdir / "dir")},
    }
    for ptype, extra in bodies.items():
        name = f"{prefix}{ptype}"
        task = done(admin, admin.post(f"{API}/pools", json={"name": name, "type": ptype, **extra}))
        info = task["result"]
        assert info["type"] == ptype and info["state"] == "inactive", info
        if ptype == "netfs":
            assert info["source"] == {"host": "nfs1.invalid", "dir": "/export/vms", "format": "nfs"}
        if ptype == "logical":
            assert info["source"]["name"] == f"{prefix}vg" and info["target"] == f"/dev/{prefix}vg"
        if ptype == "iscsi":
            assert info["source"]["device"] == "iqn.2024-01.invalid:t1"
        ok(admin.delete(f"{API}/pools/{name}"))
    for body, field in (({"type": "netfs", "target": "/srv/x", "source_host": "h"}, "source_path"),
                        ({"type": "fs", "target": "/srv/x"}, "source_dev"),
                        ({"type": "dir"}, "target")):
        r = admin.post(f"{API}/pools", json={"name": f"{prefix}bad", **body})
        assert r.status_code == 422 and field in r.json()["error"], r.text
    for body in ({"type": "nfs4", "target": "/srv/x"}, {"type": "dir", "target": "relative/dir"},
                 {"type": "dir", "target": "/srv/x", "name": "../x"}):
        r = admin.post(f"{API}/pools", json={"name": f"{prefix}bad", **body})
        assert r.status_code == 422 and ("type" in r.text or "target" in r.text or "name" in r.text), r.text
    assert f"{prefix}bad" not in [p["name"] for p in ok(admin.get(f"{API}/pools"))]
    # a pool names a host directory: only admins
    for client in (users.operator, users.viewer):
        r = client.post(f"{API}/pools", json={"name": f"{prefix}op", "type": "dir", "target": "/etc"})
        assert r.status_code == 403, r.text


def test_upload_download_convert_template_provision(users: Users, prefix: str, workdir: Path) -> None:
    admin = users.admin
    pool = make_pool(admin, f"{prefix}pool", workdir / "pool")
    # a qcow2 image with data in it, uploaded into a new volume and downloaded identical
    image = qcow2_image(workdir / "src.qcow2")
    r = admin.put(content_url(pool, "disk.qcow2"), params={"format": "qcow2", "sha256": sha(image)}, content=image)
    task = ok(r, 201)
    assert task["kind"] == "volume.upload" and task["state"] == "succeeded" and task["percent"] == 100
    up = task["result"]
    assert up["created"] and up["format"] == "qcow2" and up["capacity"] == 64 * MiB
    assert up["uploaded_bytes"] == len(image) and up["sha256"] == sha(image)
    got, down = download(admin, pool, "disk.qcow2")
    assert got == image and down["state"] == "succeeded" and down["result"]["sha256"] == sha(image)
    # a raw image too (an odd length), then again into the existing volume: 200, not created
    raw = os.urandom(5 * MiB + 333)
    assert ok(admin.put(content_url(pool, "disk.raw"), params={"format": "raw"}, content=raw), 201)["result"][
        "sha256"] == sha(raw)
    again = ok(admin.put(content_url(pool, "disk.raw"), content=raw[::-1]), 200)["result"]
    assert again["created"] is False and again["sha256"] == sha(raw[::-1])
    got, down = download(admin, pool, "disk.raw")
    assert got == raw[::-1] and down["result"]["sha256"] == sha(got)
    # convert the qcow2 volume into a raw volume (a task), and inspect both
    task = done(admin, admin.post(f"{API}/images/convert", json={
        "source": {"pool": pool, "volume": "disk.qcow2"}, "dest": {"pool": pool, "volume": "conv.raw"},
        "format": "raw"}))
    assert task["kind"] == "image.convert" and task["result"]["old_format"] == "qcow2"
    conv = ok(admin.get(f"{API}/images/info", params={"pool": pool, "volume": "conv.raw"}))
    assert conv["format"] == "raw" and conv["virtual_size"] == 64 * MiB
    assert ok(admin.get(f"{API}/pools/{pool}/volumes/conv.raw"))["owner"] == "admin"
    got, _ = download(admin, pool, "conv.raw")
    assert got[1 * MiB:3 * MiB] == b"\xab" * (2 * MiB) and got[:1 * MiB] == b"\0" * MiB
    # mark the qcow2 volume a template, provision a linked and a full volume from it
    tmpl = ok(admin.post(f"{API}/templates", json={"pool": pool, "volume": "disk.qcow2", "name": f"{prefix}t",
                                                    "description": "uploaded"}), 201)
    assert tmpl["path"] == up["path"]
    assert f"{prefix}t" in [t["name"] for t in ok(users.viewer.get(f"{API}/templates"))]
    linked = done(users.operator, users.operator.post(f"{API}/templates/{prefix}t/provision",
                                                      json={"volume": "vm1.qcow2"}))["result"]
    assert linked["linked"] and linked["info"]["backing_chain"][0]["path"] == up["path"]
    full = done(users.operator, users.operator.post(f"{API}/templates/{prefix}t/provision",
                                                    json={"volume": "vm2.qcow2", "linked": False}))["result"]
    assert full["info"]["backing_chain"] == []
    assert ok(admin.get(f"{API}/images/info", params={"pool": pool, "volume": "vm2.qcow2"}))["virtual_size"] == \
        64 * MiB
    # a template cannot be deleted, wiped or overwritten while marked, nor while linked clones use it
    r = admin.delete(f"{API}/pools/{pool}/volumes/disk.qcow2")
    assert r.status_code == 409 and "template" in r.json()["error"]
    r = admin.post(f"{API}/pools/{pool}/volumes/disk.qcow2/actions/wipe")
    assert r.status_code == 409 and "cannot wipe" in r.json()["error"]
    r = admin.put(content_url(pool, "disk.qcow2"), content=image)
    assert r.status_code == 409 and "cannot upload into" in r.json()["error"]
    assert ok(admin.delete(f"{API}/templates/{prefix}t"))["unmarked"] is True
    r = admin.delete(f"{API}/pools/{pool}/volumes/disk.qcow2")
    assert r.status_code == 409 and "backing file of vm1.qcow2" in r.json()["error"]
    r = admin.put(content_url(pool, "disk.qcow2"), content=image)
    assert r.status_code == 409 and "backing file of vm1.qcow2" in r.json()["error"]
    assert download(admin, pool, "disk.qcow2")[0] == image  # untouched


def test_volume_create_clone_resize_wipe_delete(users: Users, prefix: str, workdir: Path) -> None:
    admin, op = users.admin, users.operator
    pool = make_pool(admin, f"{prefix}pool", workdir / "pool")
    vol = ok(op.post(f"{API}/pools/{pool}/volumes", json={"name": "a.qcow2", "size": "1G"}), 201)
    assert vol["format"] == "qcow2" and vol["capacity"] == 1024 ** 3 and vol["owner"] == "st-oper"
    assert ok(op.post(f"{API}/pools/{pool}/volumes", json={"name": "b.raw", "size": 8, "format": "raw"}),
              201)["capacity"] == 8 * MiB  # a bare number is MiB, as on the command line
    linked = done(op, op.post(f"{API}/pools/{pool}/volumes/a.qcow2/clone", json={"name": "c.qcow2", "linked": True}))
    assert linked["kind"] == "volume.clone" and linked["result"]["backing_chain"][0]["path"] == vol["path"]
    full = done(op, op.post(f"{API}/pools/{pool}/volumes/b.raw/clone", json={"name": "d.raw"}))["result"]
    assert full["format"] == "raw" and full["backing_chain"] == []
    grown = ok(op.patch(f"{API}/pools/{pool}/volumes/d.raw", json={"capacity": "16M"}))
    assert grown["old_capacity"] == 8 * MiB and grown["capacity"] == 16 * MiB
    r = op.patch(f"{API}/pools/{pool}/volumes/d.raw", json={"capacity": "4M"})
    assert r.status_code == 422 and "allow_shrink" in r.json()["hint"].replace("-", "_")
    shrunk = ok(op.patch(f"{API}/pools/{pool}/volumes/d.raw", json={"capacity": "4M", "allow_shrink": True}))
    assert shrunk["capacity"] == 4 * MiB and "data past the new end" in shrunk["warning"]
    ok(op.put(content_url(pool, "d.raw"), content=b"\x55" * (4 * MiB)))
    task = done(op, op.post(f"{API}/pools/{pool}/volumes/d.raw/actions/wipe"))
    assert task["kind"] == "volume.wipe" and task["result"]["wiped"] is True
    assert download(op, pool, "d.raw")[0] == b"\0" * (4 * MiB)
    names = {v["name"] for v in ok(users.viewer.get(f"{API}/pools/{pool}/volumes"))}
    assert names == {"a.qcow2", "b.raw", "c.qcow2", "d.raw"}
    assert "backing file of c.qcow2" in op.delete(f"{API}/pools/{pool}/volumes/a.qcow2").json()["error"]
    for name in ("c.qcow2", "a.qcow2", "b.raw", "d.raw"):
        assert ok(op.delete(f"{API}/pools/{pool}/volumes/{name}"))["deleted"] is True
    assert ok(op.get(f"{API}/pools/{pool}/volumes")) == []


def test_micro_image_builds_through_the_api(users: Users, micro_image) -> None:
    """The micro build is cached (the session built it): the task finds it and answers at once."""
    task = done(users.admin, users.admin.post(f"{API}/images/build", json={"name": "micro"}))
    assert task["kind"] == "image.build" and task["result"]["key"] == micro_image.key
    assert [s["name"] for s in ok(users.admin.get(f"{API}/tasks/{task['id']}"))["steps"]] == ["kernel", "initramfs"]
    assert users.operator.post(f"{API}/images/build", json={"name": "micro"}).status_code == 403
    r = users.admin.post(f"{API}/images/build", json={"name": "debian-12", "kernel": "minimal"})
    assert r.status_code == 422 and "only for the micro image" in r.text


def test_openapi_describes_the_storage_routes(users: Users) -> None:
    spec = ok(users.viewer.get(f"{API}/openapi.json"))
    paths = spec["paths"]
    expected = {
        "/api/v1/pools": {"get", "post"}, "/api/v1/pools/{name}": {"get", "patch", "delete"},
        "/api/v1/pools/{name}/storage": {"delete"}, "/api/v1/pools/{name}/actions/build": {"post"},
        "/api/v1/pools/{name}/actions/{action}": {"post"},
        "/api/v1/pools/{pool}/volumes": {"get", "post"},
        "/api/v1/pools/{pool}/volumes/{name}": {"get", "patch", "delete"},
        "/api/v1/pools/{pool}/volumes/{name}/clone": {"post"},
        "/api/v1/pools/{pool}/volumes/{name}/actions/wipe": {"post"},
        "/api/v1/pools/{pool}/volumes/{name}/content": {"get", "put"},
        "/api/v1/images/info": {"get"}, "/api/v1/images/convert": {"post"}, "/api/v1/images/build": {"post"},
        "/api/v1/templates": {"get", "post"}, "/api/v1/templates/{name}": {"get", "delete"},
        "/api/v1/templates/{name}/provision": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths.get(path, {})), (path, sorted(paths.get(path, {})))
    put = paths["/api/v1/pools/{pool}/volumes/{name}/content"]["put"]
    assert "application/octet-stream" in put["requestBody"]["content"]
    assert put["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/UploadTask")
    schemas = spec["components"]["schemas"]
    for model in ("PoolSpec", "VolumeSpec", "CloneSpec", "ResizeSpec", "ConvertSpec", "BuildSpec", "TemplateSpec",
                  "ProvisionSpec", "PoolInfo", "VolumeInfo", "UploadResult", "ImageInfo", "Template"):
        assert model in schemas, model
