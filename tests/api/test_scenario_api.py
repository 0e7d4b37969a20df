"""The whole product over HTTP only (issue 17's "done when"), one chain against a real ``kvmkit serve`` on
qemu:///system: a dir pool and a volume; a disk image uploaded and downloaded identical (sha256); converted;
marked a template; a micro-guest VM provisioned from it boots and reads the template's data; a linked clone
of it boots; a backup restored under another name boots; a NAT network with a static reservation gives a VM
its reserved lease; a NIC attached and detached live; a host profile applied and rolled back; /metrics
scraped (prometheus-client's parser) with the VM's series; a history series with at least two points.

Every step goes through the public API, as a script, Ansible or the portal would."""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.api.guest_http import console_run, create_micro, deleting, ok_task, wait_console
from tests.api.server import Server
from tests.api.storage_client import API, content_url, done, download, make_pool, ok, sha
from tests.host.conftest import tunables_saved

pytestmark = pytest.mark.guest
__all__ = ["tunables_saved"]  # the fixture that puts the profile's keys back, used below
MiB = 1024**2


@pytest.fixture(scope="module")
def srv() -> Iterator[Server]:
    s = Server("sqlite", env={"KVMKIT_METRICS_INTERVAL": "1"})
    s.cli("user", "add", "admin", "--role", "admin")
    s.start()
    yield s
    s.cleanup()


def _ext4_image(path: Path, marker: str) -> bytes:
    """A 32 MiB raw ext4 image holding /kvmkit-marker: the micro-guest prints the marker when it is vda."""
    content = path.with_suffix(".d")
    content.mkdir()
    (content / "kvmkit-marker").write_text(marker + "\n")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(path), "32M"], check=True)
    return path.read_bytes()


def _free_subnet() -> str:
    """A /24 in 10.231.x.0 no host route or libvirt network uses (the API refuses an overlap anyway)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    for third in range(10, 250):
        net = ipaddress.IPv4Network(f"10.231.{third}.0/24")
        if str(net) not in routes:
            return str(net)
    raise AssertionError("no free 10.231.x.0/24")


def test_the_whole_product_over_http(srv: Server, prefix: str, workdir: Path, tunables_saved) -> None:
    api = srv.client(srv.token("admin"))
    token = srv.token("admin")
    marker = f"KT-{secrets.token_hex(4)}"
    vm, clone, restored, netvm = f"{prefix}vm", f"{prefix}clone", f"{prefix}back", f"{prefix}net"
    net = f"{prefix}nat"
    with deleting(api, vm, clone, restored, netvm):
        # storage: a dir pool, an empty volume, an upload downloaded back identical, a conversion, a template
        pool = make_pool(api, f"{prefix}pool", workdir / "pool")
        ok(api.post(f"{API}/pools/{pool}/volumes", json={"name": "empty.qcow2", "size": "16M",
                                                          "format": "qcow2"}), 201)
        image = _ext4_image(workdir / "data.raw", marker)
        up = ok(api.put(content_url(pool, "data.raw"), params={"format": "raw", "sha256": sha(image)},
                        content=image), 201)["result"]
        assert up["sha256"] == sha(image) and up["uploaded_bytes"] == len(image)
        got, down = download(api, pool, "data.raw")
        assert sha(got) == sha(image) == down["result"]["sha256"]
        done(api, api.post(f"{API}/images/convert", json={
            "source": {"pool": pool, "volume": "data.raw"}, "dest": {"pool": pool, "volume": "data.qcow2"},
            "format": "qcow2"}))
        assert ok(api.get(f"{API}/images/info", params={"pool": pool, "volume": "data.qcow2"}))["format"] == "qcow2"
        tmpl = f"{prefix}tmpl"
        ok(api.post(f"{API}/templates", json={"pool": pool, "volume": "data.qcow2", "name": tmpl}), 201)

        # a volume provisioned from the template (linked) is the disk of a micro-guest that boots and reads the
        # template's data; a linked clone of that VM boots too
        disk = done(api, api.post(f"{API}/templates/{tmpl}/provision",
                                  json={"volume": f"{vm}-disk0.qcow2", "pool": pool}))["result"]
        assert disk["linked"], disk
        create_micro(api, vm, disks=[{"pool": pool, "volume": f"{vm}-disk0.qcow2", "format": "qcow2"}])
        wait_console(api, vm, rf"KVMKIT-DISK vda {marker}")
        ok_task(api, api.post(f"{API}/vms/{vm}/actions/shutdown", params={"timeout": 120, "force": True}))
        ok_task(api, api.post(f"{API}/vms/{vm}/clone", json={"name": clone, "linked": True}))
        ok_task(api, api.post(f"{API}/vms/{clone}/actions/start"))
        wait_console(api, clone, rf"KVMKIT-DISK vda {marker}")

        # a backup restored under another name boots with the same data
        backup = ok_task(api, api.post(f"{API}/vms/{vm}/backups", json={}))["result"]["path"]
        ok_task(api, api.post(f"{API}/backups/restore", json={"path": backup, "name": restored}))
        ok_task(api, api.post(f"{API}/vms/{restored}/actions/start"))
        wait_console(api, restored, rf"KVMKIT-DISK vda {marker}")

        # a NAT network with a static reservation: the VM gets exactly the reserved address
        subnet = ipaddress.IPv4Network(_free_subnet())
        mac, ip = "52:54:00:7a:01:02", str(subnet.network_address + 77)
        r = api.post(f"{API}/networks", json={"name": net, "mode": "nat", "subnet": str(subnet), "start": True,
                                               "hosts": [{"mac": mac, "ip": ip, "name": "kt"}]})
        assert r.status_code in (200, 201), r.text
        try:
            create_micro(api, netvm, nics=[{"type": "network", "source": net, "mac": mac}])
            wait_console(api, netvm, rf"KVMKIT-IP {ip}\b")
            leases = ok(api.get(f"{API}/networks/{net}/leases"))
            assert [(lease["mac"], lease["ip"]) for lease in leases] == [(mac, ip)]

            # a NIC attached live (the guest sees eth1), then detached (the task ends once the guest let go)
            nic = ok(api.post(f"{API}/vms/{netvm}/nics", json={"network": "default"}))
            assert nic["live"]
            assert "eth1" in console_run(srv, token, netvm, "ls /sys/class/net")
            ok_task(api, api.delete(f"{API}/vms/{netvm}/nics/{nic['mac']}"))
            assert "eth1" not in console_run(srv, token, netvm, "ls /sys/class/net")
        finally:
            ok_task(api, api.delete(f"{API}/vms/{netvm}", params={"storage": True, "force": True}))
            api.delete(f"{API}/networks/{net}")

        # a host profile applied and rolled back (the fixture checks every value is as before)
        from tests.host.conftest import snapshot

        try:
            applied = ok(api.post(f"{API}/host/profiles/virtual-host/apply", json={}))
            assert applied["profile"] == "virtual-host" and applied["changed"], applied
        finally:
            assert ok(api.post(f"{API}/host/profiles/rollback"))["profile"] == "virtual-host"
        assert snapshot() == tunables_saved  # every value as it was

        # /metrics in Prometheus' format: the running VMs' series, with their host; a history with 2+ points
        scrape = api.get("/metrics")
        assert scrape.status_code == 200, scrape.text
        cpu = {s.labels["domain"]: s for f in text_string_to_metric_families(scrape.text) for s in f.samples
               if s.name == "libvirt_domain_info_cpu_time_seconds_total"}
        assert {clone, restored} <= cpu.keys() and cpu[clone].value > 0 and cpu[clone].labels["host"]
        history = ok(api.get(f"{API}/vms/{clone}/metrics"))
        assert len(history["timestamps"]) >= 2, history
    api.delete(f"{API}/templates/{tmpl}")
    api.close()
