"""Per-thread libvirt connections for task workers (libvirtd serves at most 5 calls per connection)."""

from __future__ import annotations

import threading

import pytest

from kvmkit.hypervisor.connection import connect, worker_connection


@pytest.mark.fast
def test_each_thread_gets_its_own_connection_and_keeps_it(conn):
    mine = worker_connection(conn)
    assert mine is not conn and mine.getURI() == conn.getURI()
    assert worker_connection(conn) is mine
    other: list = []
    t = threading.Thread(target=lambda: other.append(worker_connection(conn)))
    t.start()
    t.join()
    assert other[0] is not mine and other[0].isAlive()


@pytest.mark.fast
def test_a_closed_connection_is_reopened(conn):
    mine = worker_connection(conn)
    mine.close()
    again = worker_connection(conn)
    assert again is not mine and again.isAlive()
    assert again.listAllDomains() is not None


@pytest.mark.fast
def test_test_driver_shares_the_one_connection():
    shared = connect("test:///default")  # every test:/// connection is its own in-memory host
    try:
        assert worker_connection(shared) is shared
    finally:
        shared.close()
