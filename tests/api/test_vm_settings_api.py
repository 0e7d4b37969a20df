"""Over HTTP on qemu:///system: a VM's boot order (PATCH /api/v1/vms/{name} {"boot"}) and a disk resized through
its VM (POST /api/v1/vms/{name}/disks/{target}/resize), live on a running micro-guest that sees the new size;
and the CLI twins print the same results."""

from __future__ import annotations

import json
import subprocess

import httpx
import libvirt
import pytest
from lxml import etree

from tests.api.guest_http import console_run
from tests.api.server import Server
from tests.support.cli_run import kvmkit

pytestmark = pytest.mark.guest
MIB = 1024 * 1024


def test_boot_order_is_set_in_the_definition(admin: httpx.Client, micro_guest, make_user) -> None:
    vm = micro_guest("boot", start=False).name
    r = admin.patch(f"/api/v1/vms/{vm}", json={"boot": ["cdrom", "hd"]})
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"name", "boot"}  # only what was given
    assert out["boot"]["boot"] == ["cdrom", "hd"] and out["boot"]["applies"] == "next start"
    assert out["boot"]["config"] and not out["boot"]["live"]
    assert admin.get(f"/api/v1/vms/{vm}").json()["boot"] == ["cdrom", "hd"]
    for body, where in (({"boot": ["hd", "hd"]}, ["body", "boot"]), ({"boot": []}, ["body", "boot"]),
                        ({"boot": ["usb"]}, ["body", "boot", 0])):
        r = admin.patch(f"/api/v1/vms/{vm}", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["fields"][0]["loc"] == where, r.text
    r = admin.patch(f"/api/v1/vms/{vm}", json={"boot": ["hd"], "autostart": True, "live": True, "config": False})
    assert r.status_code == 422 and "live" in r.json()["error"], r.text
    assert admin.get(f"/api/v1/vms/{vm}").json()["autostart"] is False  # checked before anything changed
    _name, viewer = make_user("bootv", "viewer")
    assert viewer.patch(f"/api/v1/vms/{vm}", json={"boot": ["hd"]}).status_code == 403


def test_a_running_disk_grows_and_the_guest_sees_it(server: Server, admin: httpx.Client, micro_guest, workdir,
                                                   make_user, conn: libvirt.virConnect) -> None:
    raw = workdir / "grow.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(raw), "32M"], check=True)
    guest = micro_guest("dgrow", disks=[{"path": str(raw), "format": "raw"}])
    token = server.token("admin")
    assert console_run(server, token, guest.name, "cat /sys/block/vda/size").strip() == str(32 * MIB // 512)
    r = admin.post(f"/api/v1/vms/{guest.name}/disks/vda/resize", json={"size": "64M"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["live"] and out["changed"] and out["capacity"] == 64 * MIB and out["old_capacity"] == 32 * MIB
    assert console_run(server, token, guest.name, "cat /sys/block/vda/size").strip() == str(64 * MIB // 512)
    assert raw.stat().st_size == 64 * MIB
    r = admin.post(f"/api/v1/vms/{guest.name}/disks/vda/resize", json={"size": "16M", "allow_shrink": True})
    assert r.status_code == 409 and "running" in r.json()["error"], r.text
    assert admin.post(f"/api/v1/vms/{guest.name}/disks/vda/resize", json={"size": "lots"}).status_code == 422
    assert admin.post(f"/api/v1/vms/{guest.name}/disks/vdq/resize", json={"size": "1G"}).status_code == 404
    _name, delegated = make_user("dres", "operator", vm_scope="granted")
    assert admin.post(f"/api/v1/users/{_name}/grants", json={"vm": guest.name}).status_code == 201
    r = delegated.post(f"/api/v1/vms/{guest.name}/disks/vda/resize", json={"size": "128M"})
    assert r.status_code == 403, r.text  # delegated users get no storage
    live = etree.fromstring(guest.dom.XMLDesc(0).encode())
    assert live.find("devices/disk/source").get("file") == str(raw)


def test_cli_twins(micro_guest, workdir) -> None:
    img = workdir / "cli.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M"], check=True)
    vm = micro_guest("dcli", start=False, disks=[{"path": str(img), "format": "qcow2"}]).name
    data = json.loads(kvmkit("--json", "vm", "disk", "resize", vm, "vda", "24M").stdout)
    assert data["capacity"] == 24 * MIB and not data["live"] and data["changed"]
    assert "-> 32.0 MiB" in kvmkit("vm", "disk", "resize", vm, "vda", "32M").stdout
    change = json.loads(kvmkit("--json", "vm", "set", vm, "--boot", "network,hd").stdout)["changes"][0]
    assert change["action"] == "set boot" and change["boot"] == ["network", "hd"]
    bad = kvmkit("vm", "set", vm, "--boot", "hd,floppy", check=False)
    assert bad.returncode == 1 and "invalid boot device 'floppy'" in bad.stderr and "Traceback" not in bad.stderr
    shrink = kvmkit("vm", "disk", "resize", vm, "vda", "8M", check=False)
    assert shrink.returncode == 1 and "--allow-shrink" in shrink.stderr
