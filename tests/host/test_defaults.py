"""The default network and pool: defined XML is schema-valid, and preparing twice changes nothing."""

from __future__ import annotations

import pytest
from lxml import etree

from kvmkit.host import defaults

SCHEMAS = "/usr/share/libvirt/schemas"


@pytest.mark.fast
@pytest.mark.parametrize(("xml_fn", "schema"), [(defaults._network_xml, "network.rng"),
                                                 (lambda: defaults._pool_xml("/var/lib/libvirt/images"),
                                                  "storagepool.rng")])
def test_generated_xml_is_valid(xml_fn, schema):
    rng = etree.RelaxNG(etree.parse(f"{SCHEMAS}/{schema}"))
    assert rng.validate(etree.fromstring(xml_fn())), rng.error_log


@pytest.mark.guest
def test_prepare_is_idempotent_on_system(conn):
    defaults.prepare(conn)
    assert defaults.prepare(conn) == []
    net = conn.networkLookupByName("default")
    pool = conn.storagePoolLookupByName("default")
    assert net.isActive() and net.autostart() and pool.isActive() and pool.autostart()
