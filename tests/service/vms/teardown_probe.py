"""Not collected by the suite: tests/service/vms/test_shared_boot_files.py runs it in a child pytest.

Its one test ends with a VM still running whose disks live in the test's work directory and in a test
pool, as many tests of the suite do; the fixtures' teardown must stop the VM before those files go, or
libvirt never gives the VM's kernel and initrd back (their trusted.libvirt.security records stay).
"""

from __future__ import annotations

import os

import pytest

from kvmkit.service.storage import volumes
from tests.service.storage_fixtures import *  # noqa: F403 - dir_pool and make_dir_pool
from tests.support.boot_files import BootFiles, define, make_disk, records


@pytest.mark.guest
def test_end_with_a_running_vm(conn, prefix, workdir, dir_pool, virt_type):
    boot = BootFiles(os.environ["KVMKIT_PROBE_KERNEL"], os.environ["KVMKIT_PROBE_INITRD"],
                     "console=ttyS0 quiet panic=-1")
    vol = volumes.create_volume(conn, dir_pool, "probe.qcow2", "16M")
    dom, _log = define(conn, f"{prefix}probe", boot, workdir, virt_type,
                       disks=[{"path": make_disk(workdir, "probe"), "format": "qcow2"},
                              {"path": vol["path"], "format": "qcow2"}])
    dom.create()
    assert all(records(p).get("ref_dac") == "1" for p in boot.paths())
