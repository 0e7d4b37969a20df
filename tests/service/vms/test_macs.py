"""MACs: generated in 52:54:00:xx:xx:xx, unused on the host; clashes are refused naming the domain."""

from __future__ import annotations

import re

import pytest

from kvmkit.errors import Conflict, InvalidInput
from kvmkit.service.vms.macs import ensure_mac_free, generate_mac, used_macs


@pytest.mark.fast
def test_generated_macs_are_qemu_local_and_free(conn):
    used = used_macs(conn)
    macs = {generate_mac(conn, used=used) for _ in range(50)}
    assert all(re.fullmatch(r"52:54:00(:[0-9a-f]{2}){3}", m) for m in macs)
    assert not macs & set(used)


@pytest.mark.fast
def test_generate_avoids_given_and_used(test_conn):
    # the test driver's built-in domain has no NICs; generation still works on any connection
    assert generate_mac(test_conn, avoid={"52:54:00:00:00:01"}) != "52:54:00:00:00:01"


@pytest.mark.fast
def test_mac_in_use_is_refused_naming_the_domain(conn, micro_guest):
    guest = micro_guest("mac", start=False, networks=[{"network": "default", "mac": "52:54:00:ab:cd:ef"}])
    assert used_macs(conn)["52:54:00:ab:cd:ef"] == guest.name
    with pytest.raises(Conflict, match=f"52:54:00:ab:cd:ef is already used by domain '{guest.name}'"):
        ensure_mac_free(conn, "52:54:00:AB:CD:EF")
    ensure_mac_free(conn, "52:54:00:ab:cd:ef", ignore_domain=guest.name)  # its own MAC is fine
    with pytest.raises(InvalidInput):
        ensure_mac_free(conn, "not-a-mac")


@pytest.mark.fast
def test_ten_concurrent_reservations_get_distinct_macs(conn, prefix):
    from concurrent.futures import ThreadPoolExecutor

    from kvmkit.service.vms.macs import release, reserve

    def one(i: int) -> list[str]:
        return reserve(conn, f"{prefix}r{i}", [None, None])

    with ThreadPoolExecutor(10) as pool:
        got = [m for macs in pool.map(one, range(10)) for m in macs]
    try:
        assert len(set(got)) == 20
        assert not set(got) & set(used_macs(conn))
    finally:
        release(conn, got)


@pytest.mark.fast
def test_a_held_mac_is_refused_naming_the_create_that_holds_it(conn, prefix):
    from kvmkit.service.vms.macs import fresh_used_macs, release, reserve

    [mac] = reserve(conn, f"{prefix}first", [None])
    with pytest.raises(Conflict, match=f"{mac} is already used by domain '{prefix}first'"):
        reserve(conn, f"{prefix}second", [mac.upper()])
    release(conn, [mac])
    assert mac not in fresh_used_macs(conn)  # never defined: free again once a new pass has run
    assert reserve(conn, f"{prefix}second", [mac]) == [mac]
    release(conn, [mac])


@pytest.mark.fast
def test_a_pass_sees_a_domain_defined_just_before_it_was_asked(conn, micro_guest):
    from kvmkit.service.vms.macs import fresh_used_macs

    fresh_used_macs(conn)  # a recent pass exists; the next call must not reuse it
    guest = micro_guest("seen", start=False, networks=[{"network": "default"}])
    mac = etree_mac(guest.dom)
    assert fresh_used_macs(conn)[mac] == guest.name


@pytest.mark.fast
def test_concurrent_callers_share_passes(conn, monkeypatch):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from kvmkit.service.vms import macs
    passes, lock = [0], threading.Lock()
    real = macs.used_macs

    def counted(c):  # the real pass over qemu:///system, counted
        with lock:
            passes[0] += 1
        return real(c)

    monkeypatch.setattr(macs, "used_macs", counted)
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda _i: macs.fresh_used_macs(conn), range(10)))
    assert 1 <= passes[0] <= 3  # one pass in flight, the waiters share the next one


def etree_mac(dom) -> str:
    from lxml import etree

    return etree.fromstring(dom.XMLDesc(0).encode()).find("devices/interface/mac").get("address")


@pytest.mark.fast
def test_one_mac_given_to_two_nics_is_refused(conn, prefix):
    from kvmkit.service.vms.macs import release, reserve

    with pytest.raises(Conflict, match="given to two NICs"):
        reserve(conn, f"{prefix}twice", ["52:54:00:12:34:56", "52:54:00:12:34:56"])
    assert reserve(conn, f"{prefix}once", ["52:54:00:12:34:56"]) == ["52:54:00:12:34:56"]  # nothing held
    release(conn, ["52:54:00:12:34:56"])
