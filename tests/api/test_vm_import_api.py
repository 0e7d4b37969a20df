"""POST /api/v1/vms/import and GET /api/v1/os: the API twins of `kvmkit vm import` and `kvmkit os list|show`.

Operators import an OVA they put into a pool volume; host paths are for admins; a refused package fails its
task naming the problem and leaves nothing; a cancel between steps leaves nothing either."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kvmkit.service.storage.streams import upload
from tests.api.conftest import new_db_url, wait_task
from tests.api.server import Server
from tests.service.v2v.packages import ovf_xml, write_ova
from tests.support.cli_run import leftovers

MIB = 1024**2


def blank_ova(workdir: Path, href: str | None = None) -> Path:
    raw, vmdk = workdir / "blank.raw", workdir / "disk1.vmdk"
    with raw.open("wb") as fh:
        fh.truncate(64 * MIB)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(raw),
                    str(vmdk)], check=True, capture_output=True)
    raw.unlink()
    name = "bad.ova" if href else "blank.ova"
    path = write_ova(workdir / name, [("vm.ovf", ovf_xml("blank", [(href or "disk1.vmdk", 64 * MIB)], vcpus=2,
                                                         memory_mib=512)), ("disk1.vmdk", vmdk)])
    vmdk.unlink()
    return path


@pytest.mark.fast
def test_os_routes(server: Server, admin: httpx.Client, make_user) -> None:
    _, viewer = make_user("viewer", "viewer")
    rows = viewer.get("/api/v1/os", params={"family": "winnt"})
    assert rows.status_code == 200
    by_id = {r["short_id"]: r for r in rows.json()}
    assert by_id["win11"]["source"] == "kvmkit" and by_id["win11"]["replaces"] == "system"
    assert by_id["win10"]["source"] == "system" and {r["family"] for r in rows.json()} == {"winnt"}
    win11 = viewer.get("/api/v1/os/win11").json()
    assert win11["preset"]["tpm"] and win11["preset"]["secure_boot"] and win11["preset"]["disk_bus"] == "sata"
    assert any(d["class"] is None and d["name"] == "tpm-2.0" for d in win11["devices"])
    fallback = viewer.get("/api/v1/os/fedora99").json()
    assert fallback["fallback"] and fallback["short_id"] == "fedora37" and "fedora99" in fallback["message"]
    missing = viewer.get("/api/v1/os/nosuchos")
    assert missing.status_code == 404 and "see `kvmkit os list`" in missing.json()["hint"]


@pytest.mark.guest
@pytest.mark.timeout(3600)
def test_operator_imports_an_uploaded_ova(server: Server, admin: httpx.Client, make_user, conn, prefix,
                                          workdir) -> None:
    _, operator = make_user("op", "operator")
    r = operator.post("/api/v1/vms/import", json={"source": {"path": "/etc/passwd"}, "name": f"{prefix}p"})
    assert r.status_code == 403 and "host paths (source.path)" in r.json()["error"]
    r = operator.post("/api/v1/vms/import", json={"source": {"volume": "x.ova"}, "virtio_win": "/etc/passwd"})
    assert r.status_code == 403 and "virtio_win" in r.json()["error"]
    r = operator.post("/api/v1/vms/import", json={"source": {"volume": "x.ova"}, "via": "vmware"})
    assert r.status_code == 422

    upload(conn, "default", f"{prefix}src.ova", blank_ova(workdir), fmt="raw")
    r = operator.post("/api/v1/vms/import", json={"source": {"pool": "default", "volume": f"{prefix}src.ova"},
                                                  "name": f"{prefix}api"})
    assert r.status_code == 202, r.text
    task = wait_task(operator, r.json()["id"], timeout=3000)
    assert task["state"] == "succeeded", task["error"]
    steps = list(dict.fromkeys(s["name"] for s in task["steps"]))  # each step once, in order
    assert steps[:4] == ["read", "check", "convert", "inspect"] and "define" in steps
    result = task["result"]
    assert result["path"] == "kvmkit" and result["kind"] == "ova" and result["defined"]
    shown = operator.get(f"/api/v1/vms/{prefix}api").json()
    assert (shown["vcpus"], shown["memory_mib"]) == (2, 512)
    assert [d["bus"] for d in shown["disks"]] == ["sata"] and [n["model"] for n in shown["nics"]] == ["e1000e"]
    r = operator.post("/api/v1/vms/import", json={"source": {"pool": "default", "volume": f"{prefix}src.ova"},
                                                  "name": f"{prefix}api"})
    assert r.status_code == 409


@pytest.mark.guest
@pytest.mark.timeout(1800)
def test_a_refused_package_fails_its_task_and_leaves_nothing(server: Server, admin: httpx.Client, conn, prefix,
                                                              workdir) -> None:
    bad = blank_ova(workdir, href="../../etc/passwd")
    r = admin.post("/api/v1/vms/import", json={"source": {"path": str(bad)}, "name": f"{prefix}bad"})
    assert r.status_code == 202, r.text
    task = wait_task(admin, r.json()["id"])
    assert task["state"] == "failed" and "not a plain file name inside the package" in task["error"]
    assert leftovers(conn, prefix) == []
    laughs = workdir / "laughs.ovf"
    laughs.write_bytes(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "lol">]>'
                       b'<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1">&a;</Envelope>')
    r = admin.post("/api/v1/vms/import", json={"source": {"path": str(laughs)}})  # the name is read first
    assert r.status_code == 422 and "DOCTYPE or XML entities" in r.json()["error"]


@pytest.fixture()
def slow_server(backend: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A server whose tasks pause 3 s after each journalled step (KVMKIT_TASK_STEP_DELAY)."""
    srv = Server(new_db_url(backend, request), env={"KVMKIT_TASK_STEP_DELAY": "3"})
    srv.cli("user", "add", "admin", "--role", "admin")
    srv.start()
    yield srv
    srv.cleanup()


@pytest.mark.guest
@pytest.mark.timeout(1800)
def test_a_cancelled_import_leaves_nothing(slow_server: Server, conn, prefix, workdir) -> None:
    ova = blank_ova(workdir)
    with slow_server.client(slow_server.token("admin")) as c:
        r = c.post("/api/v1/vms/import", json={"source": {"path": str(ova)}, "name": f"{prefix}cx"})
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        deadline = time.monotonic() + 600
        while "convert" not in [s["name"] for s in c.get(f"/api/v1/tasks/{task_id}").json()["steps"]]:
            assert time.monotonic() < deadline, "the import never reached its convert step"
            time.sleep(0.2)
        assert c.post(f"/api/v1/tasks/{task_id}/cancel").status_code == 200  # honoured at the next step
        task = wait_task(c, task_id, timeout=1500)
    assert task["state"] == "cancelled", task
    assert "inspect" not in [s["name"] for s in task["steps"]]  # stopped before it: the converted volume is undone
    assert leftovers(conn, prefix) == []
    assert not list(Path("/var/lib/libvirt/images").glob(f"{prefix}*"))


@pytest.mark.guest
def test_create_with_os_over_the_api_keeps_what_the_body_gives(server: Server, admin: httpx.Client, make_user,
                                                               conn, prefix) -> None:
    name = f"{prefix}w11"
    r = admin.post("/api/v1/vms", json={"name": name, "os": "win11", "disks": [{"size": "1G", "bus": "virtio"}],
                                        "nics": [{"type": "network", "source": "default"}]})
    assert r.status_code == 202, r.text
    task = wait_task(admin, r.json()["id"])
    assert task["state"] == "succeeded", task["error"]
    assert any("disk 1 GiB is below the minimum for win11" in w for w in task["result"]["warnings"])
    shown = admin.get(f"/api/v1/vms/{name}").json()
    assert [d["bus"] for d in shown["disks"]] == ["virtio"]      # given in the body: kept
    assert [n["model"] for n in shown["nics"]] == ["e1000e"]     # not given: the preset's
    assert (shown["firmware"], shown["secure_boot"], shown["memory_mib"]) == ("uefi", True, 4096)
    assert shown["tpm"]["version"] == "2.0" and shown["os"]["short_id"] == "win11"
    r = admin.post("/api/v1/vms", json={"name": f"{prefix}x", "os": "debian12", "virtio_win": "/nonexistent.iso"})
    assert r.status_code == 202  # an admin may name host paths; this one does not exist
    task = wait_task(admin, r.json()["id"])
    assert task["state"] == "failed" and "/nonexistent.iso does not exist" in task["error"]
    _, op = make_user("op2", "operator")
    r = op.post("/api/v1/vms", json={"name": f"{prefix}y", "os": "win11", "virtio_win": "/etc/shadow"})
    assert r.status_code == 403 and "virtio_win" in r.json()["error"]

