"""``host evacuate``: maintenance first, then every VM away to the host placement picks (running live, shut
off offline); a VM no host can take is listed with each host's reason; once it can move, the host empties."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from lxml import etree

from kvmkit.hosts.inventory import get
from kvmkit.service.migration.evacuate import evacuate_host
from kvmkit.spec.migration import EvacuateSpec
from tests.migration.conftest import defined_on, guest
from tests.support.cli_run import KVMKIT

pytestmark = pytest.mark.guest


def _network(hosts, letter: str) -> str:
    name = f"{hosts.prefix}net"
    root = etree.Element("network")
    etree.SubElement(root, "name").text = name
    etree.SubElement(root, "bridge", name=f"kb{hosts.prefix[3:9]}ev")
    hosts.conn(letter).networkCreateXML(etree.tostring(root, encoding="unicode"))
    return name


def test_evacuate_empties_a_host(hosts, inventory) -> None:
    net = _network(hosts, "a")
    running = guest(hosts, "a", "run")
    stuck = guest(hosts, "a", "net", networks=[{"network": net}])  # its network exists on host a only
    off = hosts.guest("a", "off", start=False, memory_mib=128)

    res = evacuate_host(inventory, "a", EvacuateSpec())
    assert get(inventory.store, "a", "qemu:///system").maintenance  # placement gives it nothing new
    assert sorted((m["vm"], m["to"], m["mode"]) for m in res["moved"]) == [
        (off.name, "b", "offline"), (running.name, "b", "live")]
    assert [m["vm"] for m in res["not_moved"]] == [stuck.name]
    why = res["not_moved"][0]["reason"]
    assert f"host b: network: network '{net}' does not exist on host b" in why
    assert "host c: in maintenance" in why and "host local: in maintenance" in why
    assert res["remaining"] == [stuck.name] and not res["empty"]
    assert defined_on(hosts, running.name) == {"b": (True, True)}
    assert defined_on(hosts, off.name) == {"b": (False, True)}
    assert defined_on(hosts, stuck.name) == {"a": (True, True)}

    _network(hosts, "b")  # now it can move: evacuate again, with the CLI
    env = {**os.environ, "KVMKIT_DB": inventory.db_url, "KVMKIT_NO_WARM": "1"}
    cli = subprocess.run([KVMKIT, "--json", "host", "evacuate", "a"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    again = json.loads(cli.stdout)
    assert [m["vm"] for m in again["moved"]] == [stuck.name] and again["empty"] and again["remaining"] == []
    assert not hosts.names_on("a") & {running.name, stuck.name, off.name}
    stuck.log.wait_status(timeout=60, after=len(stuck.log.text()))
