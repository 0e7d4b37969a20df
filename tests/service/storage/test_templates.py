"""Templates: mark/unmark/list qcow2 volumes; linked clones independent of the template's size."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from kvmkit.errors import Conflict, InvalidInput, InvalidState, NotFound
from kvmkit.service.storage import templates, volumes
from tests.service.storage_fixtures import *  # noqa: F403

GiB = 1024**3


@pytest.mark.guest
def test_mark_list_unmark(conn, dir_pool, template_registry, prefix):
    volumes.create_volume(conn, dir_pool, "base.qcow2", "1G")
    entry = templates.mark(conn, dir_pool, "base.qcow2", name=f"{prefix}t", description="test base")
    assert entry["format"] == "qcow2" and entry["capacity"] == GiB
    assert [t["name"] for t in templates.list_templates()] == [f"{prefix}t"]
    assert json.loads(template_registry.read_text())[f"{prefix}t"]["volume"] == "base.qcow2"
    with pytest.raises(Conflict, match="exists already"):
        templates.mark(conn, dir_pool, "base.qcow2", name=f"{prefix}t")
    with pytest.raises(Conflict, match="already template"):
        templates.mark(conn, dir_pool, "base.qcow2", name=f"{prefix}t2")
    with pytest.raises(Conflict, match="is template"):
        volumes.delete_volume(conn, dir_pool, "base.qcow2")
    templates.unmark(f"{prefix}t")
    assert templates.list_templates() == []
    with pytest.raises(NotFound):
        templates.unmark(f"{prefix}t")


@pytest.mark.guest
def test_only_qcow2_can_be_a_template(conn, dir_pool, template_registry):
    volumes.create_volume(conn, dir_pool, "r.raw", "16M", fmt="raw")
    with pytest.raises(InvalidInput, match="must be qcow2"):
        templates.mark(conn, dir_pool, "r.raw")
    with pytest.raises(InvalidInput, match="template name"):
        volumes.create_volume(conn, dir_pool, "q.qcow2", "16M")
        templates.mark(conn, dir_pool, "q.qcow2", name="bad/name")
    assert templates.list_templates() == []


@pytest.mark.guest
def test_linked_clone_of_20g_template_is_fast(conn, dir_pool, template_registry, prefix):
    base = volumes.create_volume(conn, dir_pool, "big.qcow2", "20G")
    # give the template real content so that a copy would cost something
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64M", base["path"]], check=True,
                   capture_output=True)
    templates.mark(conn, dir_pool, "big.qcow2", name=f"{prefix}big")
    # fast because the 64 MiB written into the template are not copied (an overlay of ~200 KiB); how long it
    # takes is measured in bench/ (scenario 1), not asserted here
    path = templates.provision_from_template(conn, f"{prefix}big", f"{prefix}vm1.qcow2")
    info = volumes.volume_info(conn, dir_pool, f"{prefix}vm1.qcow2")
    assert info["path"] == path and info["capacity"] == 20 * GiB and info["allocation"] < 2 * 1024**2
    assert info["backing_chain"] == [{"path": base["path"], "format": "qcow2"}]
    read = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x11 0 64M", path], capture_output=True, text=True)
    assert read.returncode == 0 and "Pattern verification failed" not in read.stdout
    templates.unmark(f"{prefix}big")
    with pytest.raises(Conflict, match="backing file"):  # the clone still needs it
        volumes.delete_volume(conn, dir_pool, "big.qcow2")


@pytest.mark.guest
def test_full_clone_into_another_pool(conn, dir_pool, make_dir_pool, template_registry, prefix):
    other = make_dir_pool("other")
    base = volumes.create_volume(conn, dir_pool, "t.qcow2", "128M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 1M", base["path"]], check=True,
                   capture_output=True)
    templates.mark(conn, dir_pool, "t.qcow2", name=f"{prefix}t")
    path = templates.provision_from_template(conn, f"{prefix}t", "copy.qcow2", pool=other, linked=False)
    assert Path(path).parent.name == "other"
    info = volumes.volume_info(conn, other, "copy.qcow2")
    assert info["backing_chain"] == [] and info["capacity"] == 128 * 1024**2
    read = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x22 0 1M", path], capture_output=True, text=True)
    assert "Pattern verification failed" not in read.stdout
    with pytest.raises(NotFound, match="template"):
        templates.provision_from_template(conn, f"{prefix}nope", "x.qcow2")
    with pytest.raises(Conflict, match="exists already"):
        templates.provision_from_template(conn, f"{prefix}t", "copy.qcow2", pool=other)


@pytest.mark.guest
def test_templates_and_vm_disks(conn, dir_pool, micro_guest, template_registry, prefix):
    base = volumes.create_volume(conn, dir_pool, "base.qcow2", "64M")
    templates.mark(conn, dir_pool, "base.qcow2", name=f"{prefix}t")
    first = templates.provision_from_template(conn, f"{prefix}t", "vm1.qcow2")
    guest = micro_guest("fromtpl", disks=[{"path": first, "format": "qcow2"}])
    guest.log.wait_for("KVMKIT-GUEST-READY")
    # a running VM on an overlay of the template does not stop the next VM from using the template
    second = templates.provision_from_template(conn, f"{prefix}t", "vm2.qcow2")
    assert volumes.volume_info(conn, dir_pool, "vm2.qcow2")["backing_chain"][0]["path"] == base["path"]
    # but a disk a VM writes can neither become a template nor the base of a linked clone
    with pytest.raises(Conflict, match=guest.name):
        templates.mark(conn, dir_pool, "vm1.qcow2", name=f"{prefix}bad")
    with pytest.raises(Conflict, match=guest.name):
        volumes.clone_volume(conn, dir_pool, "vm1.qcow2", "vm1-linked.qcow2", linked=True)
    with pytest.raises(InvalidState, match="torn"):
        volumes.clone_volume(conn, dir_pool, "vm1.qcow2", "vm1-copy.qcow2")
    guest.dom.destroy()
    copy = volumes.clone_volume(conn, dir_pool, "vm1.qcow2", "vm1-copy.qcow2")
    assert copy["format"] == "qcow2" and Path(second).exists()
