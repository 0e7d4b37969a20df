"""The host inventory in the store (SQLite and PostgreSQL): the implicit local host, add/remove, refusals,
maintenance and limits, ssh keys in the URI, and the lean check the CLI's fast path uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect

from kvmkit.errors import Conflict, InvalidInput, NotFound
from kvmkit.hosts import inventory
from kvmkit.hosts.lean import has_other_hosts
from kvmkit.spec.host import HostLimits, HostSpec
from kvmkit.store.db import Store

LOCAL_URI = "qemu:///system"


@pytest.mark.fast
def test_the_local_host_is_always_there(store: Store) -> None:
    assert "hosts" in inspect(store.engine).get_table_names()
    recs = inventory.list_records(store, LOCAL_URI)
    assert [(r.name, r.uri, r.local) for r in recs] == [("local", LOCAL_URI, True)]
    assert inventory.list_records(None, "test:///default")[0].uri == "test:///default"
    assert inventory.get(store, "local", "qemu+tcp://x/system").uri == "qemu+tcp://x/system"  # --connect's


@pytest.mark.fast
def test_add_list_remove(store: Store) -> None:
    inventory.add(store, HostSpec(name="b", uri="qemu+tcp://10.0.0.2/system", max_memory="2G"), LOCAL_URI)
    inventory.add(store, HostSpec(name="a", uri="qemu+ssh://root@h1/system", cpu_overcommit=4), LOCAL_URI)
    recs = inventory.list_records(store, LOCAL_URI)
    assert [r.name for r in recs] == ["local", "a", "b"]
    assert recs[2].max_memory_mib == 2048 and recs[1].cpu_overcommit == 4
    inventory.remove(store, "a")
    assert [r.name for r in inventory.list_records(store, LOCAL_URI)] == ["local", "b"]
    with pytest.raises(NotFound, match="'a'"):
        inventory.remove(store, "a")
    with pytest.raises(NotFound, match="host add"):
        inventory.get(store, "nope", LOCAL_URI)


@pytest.mark.fast
def test_a_host_is_added_once(store: Store) -> None:
    inventory.add(store, HostSpec(name="b", uri="qemu+tcp://10.0.0.2/system"), LOCAL_URI)
    with pytest.raises(Conflict, match="in the inventory already"):
        inventory.add(store, HostSpec(name="b", uri="qemu+tcp://10.0.0.3/system"), LOCAL_URI)
    with pytest.raises(Conflict, match="as host 'b'"):
        inventory.add(store, HostSpec(name="c", uri="qemu+tcp://10.0.0.2:16509/system"), LOCAL_URI)
    with pytest.raises(Conflict, match="local host's URI"):
        inventory.add(store, HostSpec(name="d", uri="qemu:///system"), LOCAL_URI)


@pytest.mark.fast
def test_specs_refuse_what_cannot_work() -> None:
    for bad, why in [({"name": "local", "uri": "qemu+tcp://h/system"}, "local host"),
                     ({"name": "b c", "uri": "qemu+tcp://h/system"}, "invalid host name"),
                     ({"name": "b", "uri": "http://h/"}, "not a libvirt URI"),
                     ({"name": "b", "uri": "qemu+tcp://h/"}, "/system"),
                     ({"name": "b", "uri": "qemu+ssh://h/system?keyfile=/k"}, "--ssh-key"),
                     ({"name": "b", "uri": "qemu+tcp://h/system", "ssh_key": "/k"}, "ssh URIs"),
                     ({"name": "b", "uri": "qemu+tcp://h/system", "max_memory": "lots"}, "not a size"),
                     ({"name": "b", "uri": "qemu+tcp://h/system", "cpu_overcommit": 0}, "greater than 0")]:
        with pytest.raises(ValidationError, match=why):
            HostSpec(**bad)


@pytest.mark.fast
def test_ssh_key_goes_into_the_uri_libvirt_opens(store: Store) -> None:
    rec = inventory.add(store, HostSpec(name="s", uri="qemu+ssh://root@h2/system?no_verify=1", ssh_key="/k/id"),
                        LOCAL_URI)
    assert rec.uri == "qemu+ssh://root@h2/system?no_verify=1"
    assert rec.connect_uri == "qemu+ssh://root@h2/system?no_verify=1&keyfile=%2Fk%2Fid"


@pytest.mark.fast
def test_maintenance_and_limits_also_for_the_local_host(store: Store) -> None:
    inventory.add(store, HostSpec(name="b", uri="qemu+tcp://10.0.0.2/system"), LOCAL_URI)
    assert inventory.set_maintenance(store, "b", True, LOCAL_URI).maintenance
    local = inventory.set_maintenance(store, "local", True, LOCAL_URI)
    assert local.maintenance and local.uri == LOCAL_URI
    inventory.set_limits(store, "local", HostLimits(max_memory="1G", cpu_overcommit=2), LOCAL_URI)
    recs = {r.name: r for r in inventory.list_records(store, LOCAL_URI)}
    assert list(recs) == ["local", "b"]  # the local row only holds settings
    assert recs["local"].maintenance and recs["local"].max_memory_mib == 1024 and recs["local"].cpu_overcommit == 2
    assert recs["b"].maintenance
    inventory.set_limits(store, "local", HostLimits(max_memory="0", cpu_overcommit=0), LOCAL_URI)
    local = inventory.get(store, "local", LOCAL_URI)
    assert local.max_memory_mib is None and local.cpu_overcommit is None
    with pytest.raises(InvalidInput, match="cannot be removed"):
        inventory.remove(store, "local")
    with pytest.raises(NotFound):
        inventory.set_maintenance(store, "zz", True, LOCAL_URI)


@pytest.mark.fast
def test_the_lean_check_sees_other_hosts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kvmkit.db"
    assert has_other_hosts(url) is False  # no database yet
    store = Store(url)
    assert has_other_hosts(url) is False
    inventory.set_maintenance(store, "local", True, LOCAL_URI)
    assert has_other_hosts(url) is False  # the local row is no other host
    inventory.add(store, HostSpec(name="b", uri="qemu+tcp://10.0.0.2/system"), LOCAL_URI)
    assert has_other_hosts(url) is True
    assert has_other_hosts("postgresql+psycopg://u@h/db") is None  # cannot tell cheaply: the normal path asks
    store.engine.dispose()
