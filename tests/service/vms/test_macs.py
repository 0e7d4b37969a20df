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
    """Callers that ask while a pass is in flight cannot use it (it may have missed a domain defined just
    before they asked): they wait, and all of them share the one next pass. The first pass is held open
    until the nine other callers are all waiting, so the count is exact: one pass for the first caller,
    one shared by the other nine."""
    import threading

    from kvmkit.service.vms import macs

    class Watched(threading.Condition):
        """The host's condition, telling when ``target`` callers are blocked in wait() at once."""

        def __init__(self, target: int) -> None:
            super().__init__()
            self.target, self.waiting, self.all_waiting = target, set(), threading.Event()

        def wait(self, timeout=None):  # called with the lock held, like Condition.wait
            self.waiting.add(threading.get_ident())
            if len(self.waiting) == self.target:
                self.all_waiting.set()
            try:
                return super().wait(timeout)
            finally:
                self.waiting.discard(threading.get_ident())

    cond = Watched(9)
    monkeypatch.setattr(macs, "_hosts", {conn.getURI(): macs._Host(cond=cond)})  # a host state of our own
    real = macs.used_macs
    passes: list[int] = []  # the thread that ran each pass
    first_running, let_first_finish = threading.Event(), threading.Event()

    def counted(c):  # the real pass over qemu:///system, counted; the first one held open
        passes.append(threading.get_ident())
        if len(passes) == 1:
            first_running.set()
            assert let_first_finish.wait(120), "the test never let the first pass finish"
        return real(c)

    monkeypatch.setattr(macs, "used_macs", counted)
    results: dict[int, dict[str, str]] = {}
    errors: list[BaseException] = []

    def call(i: int) -> None:
        try:
            results[i] = macs.fresh_used_macs(conn)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(10)]
    threads[0].start()
    assert first_running.wait(120), "the first caller never started a pass"
    for t in threads[1:]:  # they ask after the first pass began
        t.start()
    assert cond.all_waiting.wait(120), f"only {len(cond.waiting)} of 9 callers ever waited together"
    let_first_finish.set()
    for t in threads:
        t.join(120)
    assert not errors and not any(t.is_alive() for t in threads), errors
    assert len(passes) == 2, passes  # not one (the nine need a newer pass), not ten (they share it)
    assert passes[1] != threads[0].ident  # the second pass was run by one of the nine
    assert all(results[i] == results[1] for i in range(1, 10))


@pytest.mark.fast
def test_reserve_sees_a_mac_defined_and_released_between_its_pass_and_its_hold(conn, prefix, micro_guest,
                                                                                monkeypatch):
    """reserve() reads a pass, then takes the lock to add its holds. If meanwhile another create held a
    MAC, defined its domain with it and released it, and a newer pass dropped that hold (it saw the
    definition), the MAC must still count as used: it is in the newer pass, not in ours."""
    from kvmkit.service.vms import macs

    mac = generate_mac(conn)
    real = macs.fresh_used_macs

    def interleaved(c):
        used = real(c)  # the pass of the reserve() under test ...
        monkeypatch.setattr(macs, "fresh_used_macs", real)
        # ... then, before it takes the lock, another create runs to the end and a newer pass runs
        assert macs.reserve(c, f"{prefix}other", [mac]) == [mac]
        micro_guest("other", start=False, networks=[{"network": "default", "mac": mac}])
        macs.release(c, [mac])
        assert real(c)[mac] == f"{prefix}other"
        return used

    monkeypatch.setattr(macs, "fresh_used_macs", interleaved)
    with pytest.raises(Conflict, match=f"{mac} is already used by domain '{prefix}other'"):
        macs.reserve(conn, f"{prefix}first", [mac])


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
