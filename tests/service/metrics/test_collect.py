"""The exporter and the sampler read every domain with ONE bulk libvirt call (counted on a real connection),
and the exporter's text parses with prometheus_client's parser into the libvirt-exporter series names."""

from __future__ import annotations

import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvmkit.images import qemu_img
from kvmkit.service.metrics.exporter import Exporter, render
from kvmkit.service.metrics.requests import RequestCounter
from kvmkit.service.metrics.sampler import Sampler
from kvmkit.store.db import Store
from tests.service.vms.test_vm_query import CountingConn

PER_DOMAIN = {"lookupByName", "lookupByUUIDString", "lookupByID", "listAllDomains", "listDomainsID",
              "domainListGetStats", "listDefinedDomains"}


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def scrape(conn, **kw) -> tuple[CountingConn, dict[str, list[tuple[dict[str, str], float]]]]:
    counting = CountingConn(conn)
    body, content_type = render(Exporter(lambda: counting, **kw))
    assert content_type.startswith("text/plain; version=0.0.4")
    return counting, samples(body.decode())


@pytest.mark.fast
def test_scrape_makes_one_bulk_call_however_many_domains(conn, micro_guest) -> None:
    few, _ = scrape(conn)
    guests = [micro_guest(f"d{i}", start=False) for i in range(4)]
    many, found = scrape(conn)
    assert many.calls.count("getAllDomainStats") == 1
    assert not PER_DOMAIN & set(many.calls), many.calls
    assert len(many.calls) == len(few.calls)  # the same calls with 4 more domains: none per domain
    for g in guests:
        (labels, value), = [x for x in found["libvirt_domain_info_vstate"] if x[0]["domain"] == g.name]
        assert value == 5 and labels["host"]  # shut off, with the host label
        assert next(x for x in found["libvirt_domain_info_meta"] if x[0]["domain"] == g.name)[0]["uuid"] == \
            g.dom.UUIDString()
    assert sum(v for labels, v in found["kvmkit_vms"] if labels["state"] == "shut-off") >= 4


@pytest.mark.fast
def test_scrape_of_the_test_driver_has_host_request_and_task_series(test_conn) -> None:
    requests = RequestCounter()
    requests.add("GET", "/api/v1/vms/{name}", 200)
    requests.add("GET", None, 404)
    _, found = scrape(test_conn, requests=requests, tasks=lambda: [("vm.create", "succeeded", 3)])
    assert found["libvirt_up"][0][1] == 1
    assert [x[0]["domain"] for x in found["libvirt_domain_info_cpu_time_seconds_total"]] == ["test"]
    modes = {labels["mode"] for labels, _ in found["kvmkit_host_cpu_seconds_total"]}
    assert {"user", "system", "idle"} <= modes
    assert found["kvmkit_host_memory_total_bytes"][0][1] > found["kvmkit_host_memory_available_bytes"][0][1] > 0
    assert found["kvmkit_host_cpus"][0][1] == os.cpu_count()
    assert {x[0]["size"] for x in found["kvmkit_host_hugepages_free"]} >= {"2M"}
    assert ({"method": "GET", "route": "/api/v1/vms/{name}", "status": "200"}, 1) in found["kvmkit_api_requests_total"]
    assert ({"method": "GET", "route": "unmatched", "status": "404"}, 1) in found["kvmkit_api_requests_total"]
    assert found["kvmkit_tasks"] == [({"kind": "vm.create", "state": "succeeded"}, 3)]


@pytest.mark.fast
def test_libvirt_down_gives_up_0_and_still_answers() -> None:
    def broken():
        raise RuntimeError("libvirtd is gone")

    body, _ = render(Exporter(broken, requests=RequestCounter()))
    found = samples(body.decode())
    assert found["libvirt_up"][0][1] == 0
    assert "libvirt_domain_info_cpu_time_seconds_total" not in found


@pytest.mark.guest
def test_running_guest_series_and_sampler_rows(conn, micro_guest, workdir, tmp_path) -> None:
    disk = workdir / "disk.qcow2"
    qemu_img.create(disk, "qcow2", 16 * 1024**2)
    disk.chmod(0o666)
    guest = micro_guest("run", disks=[{"path": str(disk), "format": "qcow2"}])
    guest.log.wait_for("KVMKIT-GUEST-READY", timeout=120)
    _, found = scrape(conn)

    def one(name: str, **labels: str) -> float:
        values = [v for lab, v in found[name] if lab["domain"] == guest.name and labels.items() <= lab.items()]
        assert len(values) == 1, (name, found.get(name))
        return values[0]

    assert one("libvirt_domain_info_cpu_time_seconds_total") > 0
    assert one("libvirt_domain_info_memory_usage_bytes") == 256 * 1024**2
    assert one("libvirt_domain_info_virtual_cpus") == 1
    assert one("libvirt_domain_info_vstate") == 1
    assert one("libvirt_domain_vcpu_time_seconds_total", vcpu="0") > 0
    assert one("libvirt_domain_block_stats_read_bytes_total", target_device="vda") > 0  # the guest probed it
    assert one("libvirt_domain_block_stats_capacity_bytes", target_device="vda") == 16 * 1024**2
    assert one("libvirt_domain_block_meta", target_device="vda", source_file=str(disk)) == 1
    assert one("libvirt_domain_memory_stats_rss_bytes") > 0

    store = Store(f"sqlite:///{tmp_path}/m.db")
    counting = CountingConn(conn)
    sampler = Sampler(store, lambda: counting, interval=1)
    sampler.tick()
    time.sleep(1.1)  # the rates need two readings at least a second apart (the stored timestamps are seconds)
    assert sampler.tick() >= 2  # this VM and the host (the first tick only primed the rates)
    assert counting.calls.count("getAllDomainStats") == 2 and not PER_DOMAIN & set(counting.calls)
    from kvmkit.service.metrics import query

    got = query.history(store, "vm", guest.name, since="5m")
    values = {s["name"]: s["values"] for s in got["series"]}
    assert len(got["timestamps"]) == 1 and values["cpu_percent"][0] is not None
    assert values["memory_used_bytes"][0] > 0 and values["memory_total_bytes"][0] == 256 * 1024**2
    sampler.stop()
    store.engine.dispose()
