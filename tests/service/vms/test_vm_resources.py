"""vCPUs, memory, autostart and stats: hot-plug and balloon seen inside real micro-guests."""

from __future__ import annotations

import libvirt
import pytest

from kvmkit.errors import InvalidInput, InvalidState, NotFound
from kvmkit.service.vms import resources as res


@pytest.mark.guest
def test_live_vcpu_hotplug_1_to_2_is_seen_by_the_guest(conn, micro_guest):
    guest = micro_guest("cpu", vcpus=1, max_vcpus=2)
    guest.log.wait_status(cpus=1)
    mark = guest.log.offset()
    result = res.set_vcpus(conn, guest.name, 2)  # running: live and config by default
    assert result["live"] and result["config"] and result["max_vcpus_raised_to"] is None
    guest.log.wait_status(after=mark, cpus=2)
    assert guest.dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 2
    with pytest.raises(InvalidInput, match=r"cannot set vcpus to 3 live on VM .*: its maximum while running is 2") \
            as err:
        res.set_vcpus(conn, guest.name, 3, live=True)
    assert "--vcpus 3 --config" in (err.value.hint or "") and "restart" in (err.value.hint or "")
    assert guest.dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2  # nothing changed by the refusal
    # --config may raise the maximum for the next boot; the running VM keeps its own
    raised = res.set_vcpus(conn, guest.name, 3, config=True)
    assert raised["max_vcpus_raised_to"] == 3 and not raised["live"]
    assert guest.dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_VCPU_MAXIMUM) == 3
    assert guest.dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE | libvirt.VIR_DOMAIN_VCPU_MAXIMUM) == 2


@pytest.mark.guest
def test_live_balloon_512_to_256_lowers_guest_memtotal(conn, micro_guest):
    guest = micro_guest("mem", memory_mib=512, max_memory_mib=512)
    before = guest.log.wait_status()
    mark = guest.log.offset()
    result = res.set_memory(conn, guest.name, 256, live=True)
    assert result["live"] and not result["config"]
    lowered = None
    for _ in range(30):
        st = guest.log.wait_status(after=mark)
        mark = guest.log.offset()
        if st.mem_total_kb < before.mem_total_kb - 200 * 1024:
            lowered = st
            break
    assert lowered is not None, f"guest MemTotal stayed near {before.mem_total_kb} kB"
    with pytest.raises(InvalidInput, match="its maximum while running is 512 MiB"):
        res.set_memory(conn, guest.name, 1024, live=True)


@pytest.mark.guest
def test_live_changes_on_a_stopped_vm_are_refused(conn, micro_guest):
    guest = micro_guest("off", start=False, vcpus=1, max_vcpus=2)
    with pytest.raises(InvalidState, match=r"cannot set vCPUs live on VM .*: it is shut off") as err:
        res.set_vcpus(conn, guest.name, 2, live=True)
    assert "--config" in (err.value.hint or "")
    with pytest.raises(InvalidState, match="cannot set memory live"):
        res.set_memory(conn, guest.name, 128, live=True)
    with pytest.raises(InvalidInput, match="at least 1 vCPU"):
        res.set_vcpus(conn, guest.name, 0)
    with pytest.raises(InvalidInput, match="at least 16 MiB"):  # checked before the vCPU change is applied
        res.set_resources(conn, guest.name, vcpus=2, memory_mib=8)
    assert guest.dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 1
    # stopped: the default is the definition only, and it may raise the maximum
    out = res.set_memory(conn, guest.name, 384)
    assert out["config"] and not out["live"] and out["max_memory_raised_to_mib"] == 384
    assert guest.dom.maxMemory() == 384 * 1024
    assert res.set_vcpus(conn, guest.name, 2)["vcpus"] == 2
    assert guest.dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_CONFIG) == 2
    assert res.set_autostart(conn, guest.name, True)["autostart"] is True
    assert guest.dom.autostart() == 1
    assert res.set_autostart(conn, guest.name, False)["autostart"] is False


@pytest.mark.guest
def test_stats_for_all_vms_and_one(conn, micro_guest, workdir):
    import subprocess

    disk = workdir / "s.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "16M"], check=True)
    guest = micro_guest("stats", disks=[{"path": str(disk), "format": "qcow2"}], networks=[{"network": "default"}])
    guest.log.wait_status()
    rows = res.stats(conn)
    mine = [r for r in rows if r["name"] == guest.name]
    assert len(mine) == 1
    one = res.stats(conn, guest.name)
    assert [r["name"] for r in one] == [guest.name]
    row = one[0]
    assert row["state"] == "running" and row["cpu_time_ns"] > 0 and row["vcpus"] == 1
    assert row["balloon_current_kib"] == 256 * 1024
    assert row["block"][0]["name"] == "vda" and row["block"][0]["path"] == str(disk)
    assert row["block"][0]["rd_bytes"] > 0  # the guest probed its disk at boot
    assert len(row["net"]) == 1 and row["net"][0]["rx_bytes"] is not None
    with pytest.raises(NotFound):
        res.stats(conn, guest.name + "-missing")


@pytest.mark.fast
def test_stats_shape_on_the_test_driver(test_conn):
    rows = res.stats(test_conn)
    assert [r["name"] for r in rows] == ["test"]
    assert rows[0]["state"] == "running"
    assert set(rows[0]) >= {"cpu_time_ns", "vcpus", "balloon_current_kib", "block", "net"}
