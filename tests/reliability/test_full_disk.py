"""A full disk: a 64 MiB ext4 file system on a loop device, mounted in the test's work directory and defined
as a dir pool. Volume create and upload and a VM backup into it fail with an error that names the full disk,
and leave no partial file; a running guest whose disk fills is paused for an I/O error, kvmkit says so, and
``vm resume`` continues it once space is freed (kvmkit does not resume it by itself)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

from kvmkit.errors import KvmkitError
from kvmkit.hypervisor.connection import connect
from kvmkit.images import qemu_img
from kvmkit.service.copies.backup import backup_vm
from kvmkit.service.storage import pools, streams, volumes
from kvmkit.service.vms import console as vm_console
from kvmkit.service.vms import lifecycle
from kvmkit.service.vms.query import list_vms, show_vm
from tests.service.storage_fixtures import loop_device, remove_pool

__all__ = ["loop_device"]
pytestmark = pytest.mark.guest
MiB = 1024 * 1024


class SmallPool:
    def __init__(self, name: str, path: Path) -> None:
        self.name, self.path = name, path

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0, name: str = "ballast") -> Path:
        """Take all free space but ``leave`` bytes with a file (outside libvirt, like another writer)."""
        ballast = self.path / name
        size = max(self.free() - leave, 0)
        while subprocess.run(["fallocate", "-l", str(size), str(ballast)], capture_output=True).returncode:
            size -= 64 * 1024  # the file's own metadata takes a few blocks
            assert size > 0
        return ballast

    def files(self) -> set[str]:
        return {p.name for p in self.path.iterdir() if p.name != "lost+found"}


@pytest.fixture()
def small_pool(conn, prefix, workdir, loop_device) -> Iterator[SmallPool]:
    dev = loop_device(64)
    mnt = workdir / "small"
    mnt.mkdir()
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", dev], check=True, capture_output=True)
    subprocess.run(["mount", dev, str(mnt)], check=True, capture_output=True)
    mnt.chmod(0o755)
    name = f"{prefix}small"
    pools.define_pool(conn, name, "dir", target=str(mnt))
    pools.start_pool(conn, name)
    try:
        yield SmallPool(name, mnt)
    finally:
        remove_pool(conn, name)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def test_volume_create_on_a_full_pool_is_refused_and_leaves_nothing(conn, small_pool: SmallPool) -> None:
    small_pool.fill(leave=8 * MiB)
    for kwargs in ({"fmt": "raw"}, {"fmt": "qcow2", "preallocation": "full"}):
        with pytest.raises(KvmkitError, match=r"more than pool .* has free") as err:
            volumes.create_volume(conn, small_pool.name, "big.img", "32M", **kwargs)  # type: ignore[arg-type]
        assert err.value.hint and "free space" in err.value.hint
        assert small_pool.files() == {"ballast"}


def test_upload_that_runs_out_of_space_says_so_and_leaves_no_partial_volume(conn, small_pool: SmallPool,
                                                                             workdir) -> None:
    src = workdir / "image.raw"
    src.write_bytes(os.urandom(24 * MiB))
    filled: list[Path] = []

    def progress(done: int, _total: int) -> None:  # another writer takes the rest of the disk mid-upload
        if done >= 2 * MiB and not filled:
            filled.append(small_pool.fill(leave=0))

    with pytest.raises(KvmkitError) as err:
        streams.upload(conn, small_pool.name, "up.raw", src, fmt="raw", progress=progress)
    assert filled, "the upload never got going"
    assert "No space left on device" in str(err.value), err.value
    assert f"pool '{small_pool.name}' is full" in err.value.message and "removed" in err.value.message
    assert err.value.hint and "free space" in err.value.hint
    assert small_pool.files() == {"ballast"}  # the new volume was deleted again
    with contextlib.suppress(libvirt.libvirtError):
        conn.storagePoolLookupByName(small_pool.name).refresh(0)
    left = {v.name() for v in conn.storagePoolLookupByName(small_pool.name).listAllVolumes(0)}
    assert left <= {"ballast", "lost+found"}, left


def test_backup_into_a_full_disk_fails_and_removes_the_partial_backup(conn, small_pool: SmallPool, micro_guest,
                                                                     workdir) -> None:
    disk = workdir / "data.raw"  # random data: the compressed backup cannot shrink it
    disk.write_bytes(os.urandom(48 * MiB))
    disk.chmod(0o666)
    guest = micro_guest("bk", start=False, disks=[{"path": str(disk), "format": "raw"}])
    small_pool.fill(leave=16 * MiB)
    dest = small_pool.path / "backup"
    with pytest.raises(KvmkitError) as err:
        backup_vm(conn, guest.name, dest)
    assert "No space left on device" in str(err.value), err.value
    assert err.value.hint and "free space" in err.value.hint
    assert not dest.exists() and small_pool.files() == {"ballast"}


class Console:
    """The VM's serial console through libvirt's stream API (an own connection with the event loop)."""

    def __init__(self, name: str) -> None:
        vm_console.ensure_event_loop()  # before the connection is opened
        self.conn = connect("qemu:///system")
        self.in_r, self.in_w = os.pipe()
        self.out_r, self.out_w = os.pipe()
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()
        self.worker = threading.Thread(target=vm_console.attach, args=(self.conn, name, self.in_r, self.out_w),
                                       daemon=True)
        self.worker.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self.out_r, 4096):
                pass

    def type(self, text: str) -> None:
        os.write(self.in_w, text.encode())

    def close(self) -> None:
        self.type("\x1d")
        self.worker.join(20)
        for fd in (self.in_r, self.in_w, self.out_w, self.out_r):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.conn.close()


def _wait_state(dom: libvirt.virDomain, want: list[int], timeout: float = 300) -> None:
    import time

    deadline = time.monotonic() + timeout
    while dom.state() != want:
        assert time.monotonic() < deadline, f"state {dom.state()}, want {want}"
        time.sleep(0.2)


def test_guest_whose_disk_fills_is_paused_for_io_error_and_resumes_after_space_is_freed(
        conn, small_pool: SmallPool, micro_guest) -> None:
    disk = small_pool.path / "grow.raw"  # sparse, larger than the file system it lives on
    qemu_img.create(disk, "raw", 128 * MiB)
    disk.chmod(0o666)
    guest = micro_guest("fill", disks=[{"path": str(disk), "format": "raw"}])
    guest.log.wait_status(timeout=180)
    ballast = small_pool.fill(leave=24 * MiB)
    console = Console(guest.name)
    try:
        at = guest.log.offset()
        console.type("\ndd if=/dev/zero of=/dev/vda bs=1M count=40 conv=fsync; echo KT-DD-DONE-$((40+2))\n")
        _wait_state(guest.dom, [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR])
        row = next(r for r in list_vms(conn) if r["name"] == guest.name)
        assert (row["state"], row["state_reason"]) == ("paused", "io-error")
        shown = show_vm(conn, guest.name)
        assert (shown["state"], shown["state_reason"]) == ("paused", "io-error")
        ballast.unlink()  # space again; kvmkit leaves the decision to resume to the administrator
        assert guest.dom.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_IOERROR]
        assert lifecycle.resume(conn, guest.name)["state"] == "running"
        guest.log.wait_for("KT-DD-DONE-42", timeout=300, after=at)
        assert guest.dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_UNPAUSED]
        assert "Input/output error" not in guest.log.text()[at:], "the guest saw an error instead of a pause"
    finally:
        console.close()
