"""The osinfo reader: Debian's osinfo-db, kvmkit's overlay beside it, local additions, inheritance, fallback."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from kvmkit.errors import NotFound
from kvmkit.service.osinfo import db as osdb
from kvmkit.service.osinfo import devices
from kvmkit.service.osinfo.catalog import show_os
from kvmkit.service.osinfo.lookup import find, list_os

pytestmark = pytest.mark.fast
SCHEMA = Path("/usr/share/osinfo/schema/osinfo.rng")
OVERLAY_FILES = sorted(osdb.OVERLAY_DIR.rglob("*.xml"))


@pytest.fixture()
def local_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty local osinfo directory ($OSINFO_LOCAL_DIR) for this test; the db is re-read with it."""
    local = tmp_path / "osinfo"
    (local / "os").mkdir(parents=True)
    monkeypatch.setenv("OSINFO_LOCAL_DIR", str(local))
    monkeypatch.setenv("OSINFO_USER_DIR", str(tmp_path / "user-osinfo"))
    yield local
    osdb.reload()


@pytest.mark.parametrize("path", OVERLAY_FILES, ids=lambda p: str(p.relative_to(osdb.OVERLAY_DIR)))
def test_overlay_files_follow_the_osinfo_schema(path: Path) -> None:
    """Every overlay file is valid osinfo-db XML; the one extension (<feature> in <firmware>) is all that the
    2022 schema does not know."""
    schema = etree.RelaxNG(etree.parse(str(SCHEMA)))
    doc = etree.parse(str(path))
    plain = copy.deepcopy(doc)
    for feature in plain.iterfind(".//firmware/feature"):
        feature.getparent().remove(feature)
    assert schema.validate(plain), schema.error_log
    if not doc.findall(".//firmware/feature"):
        assert schema.validate(doc)


def test_libosinfo_itself_reads_the_overlay() -> None:
    """The overlay is in libosinfo's local-database format: osinfo-query finds kvmkit's entries in it."""
    env = {**os.environ, "OSINFO_LOCAL_DIR": str(osdb.OVERLAY_DIR)}
    plain = subprocess.run(["osinfo-query", "os", "short-id=debian12"], capture_output=True, text=True,
                           env={k: v for k, v in os.environ.items() if not k.startswith("OSINFO_")}, check=False)
    assert "debian12" not in plain.stdout  # Debian 12's own osinfo-db (2022-11-30) has no Debian 12
    with_overlay = subprocess.run(["osinfo-query", "os", "short-id=debian12"], capture_output=True, text=True,
                                  env=env, check=True)
    assert "http://debian.org/debian/12" in with_overlay.stdout
    ubuntu = subprocess.run(["osinfo-query", "os", "short-id=ubuntu24.04"], capture_output=True, text=True, env=env,
                            check=True)
    assert "http://ubuntu.com/ubuntu/24.04" in ubuntu.stdout
    tpm = subprocess.run(["osinfo-query", "device", "--fields=id"], capture_output=True, text=True, env=env, check=True)
    assert devices.TPM2 in tpm.stdout


def test_sources_and_the_replaced_win11(local_db: Path) -> None:
    db = osdb.load()
    assert db.locations[0] == ("system", "/usr/share/osinfo")
    assert ("kvmkit", str(osdb.OVERLAY_DIR)) in db.locations
    assert db.by_short_id("debian12").source == "kvmkit"
    assert db.by_short_id("ubuntu24.04").source == "kvmkit"
    assert db.by_short_id("debian11").source == "system"
    win11 = db.by_short_id("win11")
    assert win11.source == "kvmkit" and db.replaced[win11.id] == "system"
    rows = {r["short_id"]: r for r in list_os()}
    assert rows["win11"]["replaces"] == "system" and rows["win10"]["source"] == "system"
    assert {r["family"] for r in list_os("winnt")} == {"winnt"}
    assert {r["distro"] for r in list_os("debian")} == {"debian"}


def test_a_local_addition_wins_over_the_overlay(local_db: Path) -> None:
    (local_db / "os" / "example.org").mkdir()
    (local_db / "os" / "example.org" / "debian-12.xml").write_text(
        '<libosinfo version="0.0.1"><os id="http://debian.org/debian/12"><short-id>debian12</short-id>'
        "<name>Debian 12 (site build)</name><family>linux</family><distro>debian</distro>"
        '<derives-from id="http://debian.org/debian/11"/></os></libosinfo>')
    (local_db / "os" / "example.org" / "broken.xml").write_text("<libosinfo><os id=")  # skipped, as libosinfo does
    db = osdb.reload()
    entry = db.by_short_id("debian12")
    assert entry.source == "local" and entry.name == "Debian 12 (site build)"
    assert db.replaced[entry.id] == "kvmkit"
    assert devices.support(db, entry).virtio  # inherited from debian11 and older


def test_devices_resources_and_firmware_are_inherited_and_can_be_withdrawn(local_db: Path) -> None:
    (local_db / "os" / "example.org").mkdir()
    (local_db / "os" / "example.org" / "oldvirtio-1.xml").write_text(
        '<libosinfo version="0.0.1"><os id="http://example.org/oldvirtio/1"><short-id>oldvirtio1</short-id>'
        "<name>No virtio-block 1</name><family>linux</family><distro>oldvirtio</distro>"
        '<derives-from id="http://debian.org/debian/12"/>'
        '<devices><device id="http://pcisig.com/pci/1af4/1001" supported="false"/>'
        '<device id="http://pcisig.com/pci/1af4/1042" supported="false"/></devices></os></libosinfo>')
    db = osdb.reload()
    entry = db.by_short_id("oldvirtio1")
    sup = devices.support(db, entry)
    assert not sup.virtio_block and sup.virtio_net and sup.q35
    assert db.resources(entry)["minimum"]["ram"] == 1024**3  # debian12's, the nearest with resources
    assert [f.type for f in db.firmware(entry)] == ["efi"]
    assert [p.short_id for p in db.parents(entry)][:2] == ["debian12", "debian11"]


def test_unknown_newer_releases_fall_back_to_the_nearest_known_one() -> None:
    m = find("fedora99")
    assert m.fallback and m.entry.short_id == "fedora37"
    assert "fedora37" in (m.message or "") and "fedora99" in (m.message or "")
    m = find("ubuntu26.04")
    assert m.fallback and m.entry.short_id == "ubuntu24.04"
    m = find("win12")
    assert m.fallback and m.entry.short_id == "win11"
    m = find("debian13")
    assert m.fallback and m.entry.short_id == "debian12"
    m = find("rhel9")  # a series known by minor releases: the newest, a note and not a fallback
    assert not m.fallback and m.entry.short_id == "rhel9.1" and "rhel9.1" in (m.message or "")
    assert find("http://debian.org/debian/12").entry.short_id == "debian12"
    with pytest.raises(NotFound, match="unknown OS 'debain12'") as err:
        find("debain12")
    assert "debian12" in (err.value.hint or "")
    with pytest.raises(NotFound):
        find("http://example.org/nothing/1")


def test_show_os_describes_the_entry_and_its_preset() -> None:
    d = show_os("win11")
    assert d["source"] == "kvmkit" and d["replaces"] == "system" and d["path"].endswith("win-11.xml")
    assert {"type": "efi", "supported": True, "features": [{"name": "secure-boot", "required": True}]} in d["firmware"]
    assert {"type": "bios", "supported": False, "features": []} in d["firmware"]
    assert d["resources"]["minimum"]["ram"] == 4 * 1024**3 and d["resources"]["minimum"]["n_cpus"] == 2
    assert any(x["id"] == devices.TPM2 and x["name"] == "tpm-2.0" for x in d["devices"])
    p = d["preset"]
    assert (p["uefi_required"], p["secure_boot"], p["tpm"], p["disk_bus"], p["nic_model"]) == \
        (True, True, True, "sata", "e1000e")
    d = show_os("debian12")
    assert d["derives_from"] == ["debian11"] and d["preset"]["disk_bus"] == "virtio"
    assert d["preset"]["machine"] == "q35" and d["eol_date"] == "2026-06-10"
    d = show_os("fedora41")
    assert d["fallback"] and d["short_id"] == "fedora37" and d["requested"] == "fedora41"
