"""`kvmkit vm xml NAME [--inactive] [--replace FILE]` through the real executable (the API's twin)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from lxml import etree

KVMKIT = [sys.executable, "-m", "kvmkit"]
pytestmark = pytest.mark.guest


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVMKIT, *args], capture_output=True, text=True, timeout=120, input=stdin)


def test_vm_xml_prints_and_replaces(micro_guest, workdir) -> None:
    guest = micro_guest("clixml", start=False)
    res = run("vm", "xml", guest.name, "--inactive")
    assert res.returncode == 0, res.stderr
    root = etree.fromstring(res.stdout.encode())
    assert root.findtext("name") == guest.name
    desc = etree.Element("description")
    desc.text = "from the CLI"
    root.find("uuid").addnext(desc)
    new = workdir / "new.xml"
    new.write_text(etree.tostring(root, encoding="unicode"))
    res = run("--json", "vm", "xml", guest.name, "--replace", str(new))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["changed"] and "+  <description>from the CLI</description>" in out["diff"]
    res = run("vm", "xml", guest.name, "--replace", "-", stdin=new.read_text())
    assert res.returncode == 0 and "unchanged" in res.stdout, res.stderr
    res = run("vm", "xml", guest.name, "--replace", "-", stdin=new.read_text().replace("<devices>",
                                                                                      "<devices><bogus/>"))
    assert res.returncode == 1 and res.stderr.startswith("error: libvirt's domain schema rejects the XML")
    assert "<bogus>" in res.stderr
    res = run("vm", "xml", guest.name, "--replace", str(workdir / "missing.xml"))
    assert res.returncode == 1 and "cannot read" in res.stderr
