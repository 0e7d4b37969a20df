"""Cloud-init given inline (no host file) proven on a real debian-12 guest: a VM created over the API with
``ssh_authorized_keys``, ``user_data_text`` (a #cloud-config that writes a file and runs a command), a password
and a hostname is reached over SSH with that key, has that hostname, the file and the command's output; the
seed holds only the password's hash; no API answer (the VM, its task, the audit log) shows the user-data or
the password.

Sibling of test_debian_guest.py (which proves the host-file fields): tier ``full``, the cached debian-12 image
(kvmkit image build debian-12), TCG, minutes per boot. The create is an admin's (direct kernel boot and an
existing volume are host paths); that an operator may send the same inline fields is proven on
test:///default in tests/api/test_cloud_init_inline.py.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from tests.conftest import TEST_ROOT, live_conn
from tests.support.cleanup import stop_domains, sweep

pytestmark = [pytest.mark.full, pytest.mark.timeout(1800)]
BOOT_DEADLINE_S = 1200  # 1-4 min on a quiet host; 8 agents share 2 cores here
USER = "debian"  # the image's cloud-init default user


def _lease_ip(dom: libvirt.virDomain) -> str | None:
    mac = etree.fromstring(dom.XMLDesc(0).encode()).find("devices/interface/mac").get("address")
    leases = live_conn().networkLookupByName("default").DHCPLeases(mac)
    return next((lease["ipaddr"] for lease in leases if lease["type"] == libvirt.VIR_IP_ADDR_TYPE_IPV4), None)


def _wait_ready(name: str, serial: Path) -> str:
    """Boot until the agent answers, cloud-init has finished and the guest has a lease; its address."""
    from kvmkit.service.vms import agent, seed

    deadline = time.monotonic() + BOOT_DEADLINE_S
    while time.monotonic() < deadline:
        dom = live_conn().lookupByName(name)
        if agent.connected(dom):
            try:
                if seed.cloud_init_result(dom) is not None and (ip := _lease_ip(dom)):
                    return ip
            except Exception:  # the agent went away between two calls (still booting)
                pass
        time.sleep(3)
    raise AssertionError(f"{name} not ready within {BOOT_DEADLINE_S} s; serial log tail:\n"
                         + serial.read_text(errors="replace")[-3000:])


def _ssh(key: Path, ip: str, *cmd: str) -> str:
    res = subprocess.run(["ssh", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                          "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                          "-o", "PasswordAuthentication=no", "-i", str(key), f"{USER}@{ip}", *cmd],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"ssh {' '.join(cmd)}: {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_inline_keys_and_user_data_reach_the_guest_over_ssh() -> None:
    from kvmkit.images import debian, qemu_img
    from tests.api.conftest import wait_task
    from tests.api.server import Server

    prefix = f"kt-{secrets.token_hex(3)}-"
    conn = live_conn()
    work = TEST_ROOT / prefix.rstrip("-")
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    srv = Server("sqlite")
    try:
        image = debian.build(None)  # cached: the debian-12 tests built it
        key = work / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kvmkit-inline", "-f", str(key)],
                       check=True)
        marker = f"inline-{secrets.token_hex(8)}"  # appears in user-data only: must stay out of every answer
        password = f"pw-{secrets.token_hex(8)}"
        user_data = ("#cloud-config\n"
                     f"write_files:\n  - path: /etc/kvmkit-inline\n    content: {marker}\n    permissions: '0644'\n"
                     "runcmd:\n  - [sh, -c, 'echo ran > /var/tmp/kvmkit-runcmd']\n")
        vol = etree.Element("volume")
        etree.SubElement(vol, "name").text = f"{prefix}root.qcow2"
        size = qemu_img.info(image["path"], "qcow2")["virtual-size"]
        etree.SubElement(vol, "capacity", unit="bytes").text = str(size)
        etree.SubElement(etree.SubElement(vol, "target"), "format", type="qcow2")
        back = etree.SubElement(vol, "backingStore")
        etree.SubElement(back, "path").text = image["path"]
        etree.SubElement(back, "format", type="qcow2")
        conn.storagePoolLookupByName("default").createXML(etree.tostring(vol, encoding="unicode"), 0)
        name, hostname = f"{prefix}inl", f"{prefix}h".replace("-", "x")
        srv.cli("user", "add", "admin", "--role", "admin", "--password-stdin", stdin="admin-pass-123\n")
        srv.start()
        with srv.client(srv.token("admin")) as api:
            r = api.post("/api/v1/vms", json={
                "name": name, "memory_mib": 1024, "vcpus": 1, "rng": True, "machine": "pc", "start": True,
                "kernel": image["kernel"], "initrd": image["initrd"], "cmdline": image["cmdline"],
                "disks": [{"volume": f"{prefix}root.qcow2", "pool": "default"}],
                "serial_log": str(work / "serial.log"), "nics": [{"type": "network", "source": "default"}],
                "cloud_init": {"hostname": hostname, "ssh_authorized_keys": [(work / "id_ed25519.pub").read_text()],
                               "user_data_text": user_data, "password": password}})
            assert r.status_code == 202, r.text
            task = wait_task(api, r.json()["id"], timeout=600)
            assert task["state"] == "succeeded", task
            ip = _wait_ready(name, work / "serial.log")
            out = _ssh(key, ip, "hostname; id -un; cat /etc/kvmkit-inline; echo; cat /var/tmp/kvmkit-runcmd")
            assert out.split() == [hostname, USER, marker, "ran"], out
            # the seed carries the user's document merged with the key and only the password's hash
            seed = Path(f"/var/lib/libvirt/images/{name}-cidata.img")
            env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
            seeded = subprocess.run(["mtype", "-i", str(seed), "::user-data"], capture_output=True, text=True,
                                    env=env, check=True).stdout
            assert marker in seeded and "kvmkit-inline" in seeded and "password: $6$" in seeded
            assert password not in seed.read_bytes().decode("latin-1")
            answers = [api.get(f"/api/v1/vms/{name}").json(), api.get(f"/api/v1/tasks/{task['id']}").json(),
                       api.get("/api/v1/tasks").json(), api.get("/api/v1/audit", params={"limit": 1000}).json()]
            shown = json.dumps(answers)
            assert marker not in shown and password not in shown and "runcmd" not in shown
    finally:
        srv.cleanup()
        stop_domains(live_conn(), prefix)
        sweep(live_conn(), prefix)
        import shutil

        shutil.rmtree(work, ignore_errors=True)
