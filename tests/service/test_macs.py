"""MACs: generated in 52:54:00:xx:xx:xx, unused on the host; clashes are refused naming the domain."""

from __future__ import annotations

import re

import pytest

from kvmkit.errors import Conflict, InvalidInput
from kvmkit.service.macs import ensure_mac_free, generate_mac, used_macs


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
