"""Guest disks offline: what is refused before libguestfs is started (no appliance boots here), the guest
path rules and how libguestfs' errors become kvmkit errors. The real copies: test_debian_guest.py."""

from __future__ import annotations

import pytest

from kvmkit.errors import Conflict, HostError, InvalidInput, InvalidState, NotFound, OperationFailed
from kvmkit.images import qemu_img
from kvmkit.service.guests import guestfs, offline
from tests.support.cli_run import kvmkit


@pytest.mark.fast
@pytest.mark.parametrize("path", ["etc/hostname", "", "/a\nb", "/x\0y", "relative/../x"])
def test_guest_paths_must_be_absolute(path: str) -> None:
    with pytest.raises(InvalidInput, match="absolute path"):
        offline.guest_path(path)


@pytest.mark.fast
def test_guest_paths_are_normalised() -> None:
    assert offline.guest_path("/etc//ssh/") == "/etc/ssh"
    assert offline.guest_path("/") == "/"
    assert offline.guest_path("/a/../b") == "/b"


@pytest.mark.fast
@pytest.mark.parametrize(("stderr", "kind", "word"), [
    ("libguestfs: error: download: /etc/nope: No such file or directory\n", NotFound, "/etc/nope"),
    ("guestfish: no operating system was found on this disk\n", InvalidState, "no operating system"),
    ("libguestfs: error: copy_in: target '/etc/hostname' is not a directory\n", InvalidInput, "not a directory"),
    ("supermin: failed to find a suitable kernel\n", HostError, "appliance"),
    ("libguestfs: error: qemu: Failed to get \"write\" lock\n", InvalidState, "in use"),
    ("libguestfs: error: something else broke\n", OperationFailed, "something else broke"),
])
def test_libguestfs_errors_are_kvmkit_errors(stderr: str, kind: type, word: str) -> None:
    err = guestfs._error("guestfish", stderr)
    assert isinstance(err, kind) and word in err.message


@pytest.mark.fast
def test_every_disk_is_added_with_its_format() -> None:
    args = guestfs.drive_args([{"target": "vda", "path": "/d/a.qcow2", "format": "qcow2"},
                               {"target": "vdb", "path": "/d/b.img", "format": "raw"}])
    assert args == ["--format=qcow2", "-a", "/d/a.qcow2", "--format=raw", "-a", "/d/b.img"]
    with pytest.raises(InvalidState, match="vmdk"):
        guestfs.drive_args([{"target": "vda", "path": "/d/c.vmdk", "format": "vmdk"}])
    env = guestfs.env()
    assert env["LIBGUESTFS_BACKEND"] == "direct" and env["LIBGUESTFS_MEMSIZE"]


def _disk(workdir, name: str, backing=None):
    path = workdir / name
    qemu_img.create(path, "qcow2", 0 if backing else 64 * 1024**2, **({"backing": str(backing),
                                                                        "backing_fmt": "qcow2"} if backing else {}))
    path.chmod(0o666)
    return path


@pytest.mark.guest
def test_running_vm_is_refused_without_readonly(micro_guest, conn, workdir) -> None:
    g = micro_guest("run", disks=[{"path": str(_disk(workdir, "d.qcow2")), "format": "qcow2"}])
    for argv in (["guest", "ls", g.name, "/"], ["guest", "cat", g.name, "/etc/hostname"], ["guest", "df", g.name],
                 ["guest", "inspect", g.name], ["guest", "copy-out", g.name, "/etc", str(workdir)]):
        res = kvmkit(*argv, check=False)
        assert res.returncode == 1 and "running" in res.stderr and "--readonly" in res.stderr, res.stderr
    res = kvmkit("guest", "copy-in", g.name, str(workdir / "d.qcow2"), "/root", check=False)
    assert res.returncode == 1 and "shut it down" in res.stderr
    assert offline.vm_disks(conn, g.name, readonly=True)[0]["path"] == str(workdir / "d.qcow2")
    with pytest.raises(InvalidState, match=r"cannot be --readonly|running"):
        offline.vm_disks(conn, g.name, readonly=True, write=True)


@pytest.mark.guest
def test_copy_in_to_a_base_that_a_linked_clone_uses_is_refused(micro_guest, conn, workdir, tmp_path) -> None:
    base = _disk(workdir, "base.qcow2")
    overlay = _disk(workdir, "overlay.qcow2", backing=base)
    tmpl = micro_guest("tmpl", start=False, disks=[{"path": str(base), "format": "qcow2"}])
    clone = micro_guest("clone", start=False, disks=[{"path": str(overlay), "format": "qcow2"}])
    note = tmp_path / "note.txt"
    note.write_text("x\n")
    res = kvmkit("guest", "copy-in", tmpl.name, str(note), "/root", check=False)
    assert res.returncode == 1 and clone.name in res.stderr and "backing file" in res.stderr, res.stderr
    with pytest.raises(InvalidState, match=clone.name):
        offline.copy_in(conn, tmpl.name, [str(note)], "/root")
    # reading the base is fine, and so is writing the clone's own overlay (checked, not run: no appliance)
    assert offline.vm_disks(conn, tmpl.name, readonly=False)[0]["path"] == str(base)
    assert offline.vm_disks(conn, clone.name, readonly=False, write=True)[0]["path"] == str(overlay)


@pytest.mark.guest
def test_copy_in_to_a_disk_another_vm_has_is_refused(micro_guest, conn, workdir) -> None:
    shared = _disk(workdir, "shared.qcow2")
    one = micro_guest("one", start=False, disks=[{"path": str(shared), "format": "qcow2"}])
    two = micro_guest("two", start=False, disks=[{"path": str(shared), "format": "qcow2"}])
    with pytest.raises(Conflict, match=f"also a disk of VM '{two.name}'"):
        offline.vm_disks(conn, one.name, readonly=False, write=True)


@pytest.mark.fast
def test_listing_parses_names_and_stats_in_one_order() -> None:
    out = ("/etc/ssh/./\n/etc/ssh/moduli\n/etc/ssh/ssh_config.d/\n/etc/ssh/.hidden\n"
           + "".join(f"st_dev: 2048\nst_ino: {i}\nst_mode: {mode}\nst_uid: 0\nst_gid: 0\nst_size: {size}\n"
                     f"st_mtime_sec: 1700000000\n" for i, (mode, size) in
                     enumerate(((0o40755, 4096), (0o100644, 573928), (0o40755, 4096), (0o100600, 3)))))
    names, stats = offline._parse_glob_listing(out)
    assert names == ["/etc/ssh/.", "/etc/ssh/moduli", "/etc/ssh/ssh_config.d", "/etc/ssh/.hidden"]
    entries = [offline._stat_entry(n, st) for n, st in zip(names, stats, strict=True)][1:]
    assert [(e["name"], e["type"], e["mode"], e["size"]) for e in entries] == [
        ("moduli", "file", "0644", 573928), ("ssh_config.d", "directory", "0755", 4096), (".hidden", "file", "0600", 3)]
    assert offline._glob_quote("/a*b/{x,y}[1]") == "/a\\*b/\\{x\\,y\\}\\[1\\]"
