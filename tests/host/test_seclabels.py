"""libvirt's security records: found, reported by `host check`, cleared by `host repair`; confinement.

The records these tests repair are real: a VM booted from private copies of the micro-guest's kernel and
initrd (in the test's work directory, never the shared cache) is stopped after its disk file was deleted,
which is how the test suite used to leave them (see tests.support.boot_files.leak_records).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kvmkit.host import check, seclabels
from kvmkit.service.host import repair
from tests.support.boot_files import (
    boot_once,
    define,
    describe,
    leak_records,
    owner,
    private_boot_files,
    records,
)
from tests.support.cli_run import kvmkit

QEMU = (64055, 64055)  # libvirt-qemu on this host, as libvirt's capabilities say (checked below)
STAMP = str(seclabels.boot_time())


def _record(path: Path, refs: str = "1", stamp: str = STAMP, who: tuple[int, int] = QEMU) -> Path:
    path.write_bytes(b"x")
    os.chown(path, *who)
    for name, value in (("dac", "+0:+0"), ("ref_dac", refs), ("timestamp_dac", stamp)):
        os.setxattr(path, seclabels.ATTR_PREFIX + name, value.encode())
    return path


# -- the host layer on plain files ---------------------------------------------------------------------

@pytest.mark.fast
def test_records_are_read_split_and_described(tmp_path):
    held_file = _record(tmp_path / "held", refs="2")
    stale_file = _record(tmp_path / "stale", stamp="1")
    (tmp_path / "clean").write_bytes(b"y")
    found, scanned = seclabels.scan(seclabels.files_under([str(tmp_path)]))
    assert scanned == 3 and sorted(r.path for r in found) == [str(held_file), str(stale_file)]
    stale, held = seclabels.split(found, {str(held_file): ["vm-a"]})
    assert [r.path for r in stale] == [str(stale_file)]
    assert [(h.path, h.vms, h.refs) for h in held] == [(str(held_file), ["vm-a"], 2)]
    assert seclabels.read_record(str(held_file)).this_boot()
    rec = stale[0]
    assert rec.refs() == 1 and rec.remembered_owner() == (0, 0) and rec.owner == QEMU and not rec.this_boot()
    assert rec.summary() == "ref_dac=1, original owner 0:0, owner now 64055:64055, recorded before the last host boot"
    verdict = check.check_security_records(stale, held, scanned)
    assert verdict.status == "warn" and str(stale_file) in verdict.detail and "kvmkit host repair" in verdict.hint
    assert check.check_security_records([], held, scanned).status == "pass"


@pytest.mark.fast
def test_clear_gives_the_file_back_only_from_the_qemu_user_and_dry_run_changes_nothing(tmp_path):
    leaked = _record(tmp_path / "leaked")
    rec = seclabels.read_record(str(leaked))
    assert rec is not None
    dry = seclabels.clear(rec, relabelled_owner=QEMU, dry_run=True)
    assert dry.owner_after == "0:0" and dry.removed["ref_dac"] == "1" and dry.skipped is None
    assert owner(leaked) == QEMU and records(leaked)["ref_dac"] == "1"
    done = seclabels.clear(rec, relabelled_owner=QEMU)
    assert (done.owner_before, done.owner_after) == ("64055:64055", "0:0")
    assert done.removed == {"dac": "+0:+0", "ref_dac": "1", "timestamp_dac": STAMP}
    assert owner(leaked) == (0, 0) and records(leaked) == {}

    # an owner someone chose since (not the QEMU user's) is kept; only the records go
    chosen = _record(tmp_path / "chosen", who=(1000, 1000))
    done = seclabels.clear(seclabels.read_record(str(chosen)), relabelled_owner=QEMU)
    assert done.owner_after is None and owner(chosen) == (1000, 1000) and records(chosen) == {}


@pytest.mark.fast
def test_clear_leaves_a_record_that_changed_or_is_locked_by_libvirt(tmp_path, monkeypatch):
    monkeypatch.setattr(seclabels, "LOCK_WAIT_S", 0.5)
    path = _record(tmp_path / "busy")
    rec = seclabels.read_record(str(path))
    os.setxattr(path, seclabels.ATTR_PREFIX + "ref_dac", b"2")  # a VM started using it meanwhile
    done = seclabels.clear(rec, relabelled_owner=QEMU)
    assert done.skipped and "changed" in done.skipped and records(path)["ref_dac"] == "2"

    # another process holds the byte libvirt locks while relabelling: nothing is touched
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys
        fd = os.open({str(path)!r}, os.O_RDWR)
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, 1)
        print("locked", flush=True)
        sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rec = seclabels.read_record(str(path))
        done = seclabels.clear(rec, relabelled_owner=QEMU)
        assert done.skipped and "lock" in done.skipped and records(path)["ref_dac"] == "2" and owner(path) == QEMU
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert seclabels.clear(seclabels.read_record(str(path)), relabelled_owner=QEMU).skipped is None


@pytest.mark.fast
def test_readable_as_follows_permission_bits_of_the_file_and_its_directories(workdir, tmp_path):
    hidden = tmp_path / "a.iso"  # pytest's base directory is root's alone (0700)
    hidden.write_bytes(b"iso")
    hidden.chmod(0o644)
    assert not seclabels.readable_as(str(hidden), QEMU)
    shared = workdir / "pub" / "a.iso"
    shared.parent.mkdir()
    shared.write_bytes(b"iso")
    shared.parent.chmod(0o755)
    shared.chmod(0o644)
    assert seclabels.readable_as(str(shared), QEMU)
    shared.chmod(0o600)
    assert not seclabels.readable_as(str(shared), QEMU)
    os.chown(shared, *QEMU)
    assert seclabels.readable_as(str(shared), QEMU)
    shared.chmod(0o644)
    shared.parent.chmod(0o700)
    assert not seclabels.readable_as(str(shared), QEMU)
    assert not seclabels.readable_as(str(workdir / "missing"), QEMU)


# -- confinement ---------------------------------------------------------------------------------------

CAPS = """<capabilities><host><uuid>0</uuid>
  <secmodel><model>none</model><doi>0</doi></secmodel>
  <secmodel><model>dac</model><doi>0</doi>
    <baselabel type='kvm'>{label}</baselabel><baselabel type='qemu'>{label}</baselabel></secmodel>
  {extra}
</host></capabilities>"""


@pytest.mark.fast
def test_confinement_warns_when_guests_would_run_as_root():
    root = check.confinement(CAPS.format(label="+0:+0", extra=""), set(), [])
    assert root.status == "warn" and "guests run as root" in root.detail and "qemu.conf" in root.hint
    one_vm = check.confinement(CAPS.format(label="+64055:+64055", extra=""), set(),
                               [("good", "dynamic", "+64055:+64055"), ("bad", "static", "+0:+0")])
    assert one_vm.status == "warn" and "bad" in one_vm.detail and "good" not in one_vm.detail
    unused = check.confinement(CAPS.format(label="+64055:+64055", extra=""), {"apparmor"}, [])
    assert unused.status == "warn" and "apparmor" in unused.detail and 'security_driver = "apparmor"' in unused.hint
    confined = check.confinement(CAPS.format(label="+64055:+64055",
                                             extra="<secmodel><model>apparmor</model><doi>0</doi></secmodel>"),
                                 {"apparmor"}, [])
    assert confined.status == "pass" and "confined by apparmor" in confined.detail
    nodac = check.confinement("<capabilities><host><secmodel><model>none</model></secmodel></host></capabilities>",
                              set(), [])
    assert nodac.status == "warn" and "no DAC" in nodac.detail


@pytest.mark.guest
def test_this_host_runs_guests_as_libvirt_qemu_under_dac(conn, prefix, workdir, micro_image, virt_type):
    assert check.dac_base_owner(conn.getCapabilities()) == QEMU
    boot = private_boot_files(micro_image, workdir / "boot")
    dom, log = define(conn, f"{prefix}conf", boot, workdir, virt_type)
    dom.create()
    log.wait_for("KVMKIT-GUEST-READY", timeout=90)
    pid = int(Path(f"/run/libvirt/qemu/{dom.name()}.pid").read_text())
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    assert status["Uid"].split()[:2] == ["64055", "64055"] and status["Gid"].split()[:2] == ["64055", "64055"]
    verdict = check.check_confinement("qemu:///system")
    assert verdict.status == "pass", verdict
    assert "libvirt-qemu:libvirt-qemu (uid 64055, gid 64055)" in verdict.detail and "DAC" in verdict.detail
    assert "no AppArmor or SELinux" in verdict.detail  # this host runs neither
    dom.destroy()


# -- host check and host repair on real stale records --------------------------------------------------

@pytest.mark.guest
def test_repair_clears_real_stale_records_and_vms_boot_again(conn, prefix, workdir, micro_image, virt_type):
    boot = private_boot_files(micro_image, workdir / "boot")
    leak_records(conn, f"{prefix}leak", boot, workdir, virt_type)
    leaked = describe(boot.paths())
    assert all(o == QEMU and r["ref_dac"] == "1" and r["dac"] == "+0:+0" for o, r in leaked.values())

    stale, held, _n = repair.find(conn, [str(workdir)])
    assert sorted(r.path for r in stale) == sorted(boot.paths()) and held == []
    assert check.check_security_records(stale, held, _n).status == "warn"

    dry = repair.repair(conn, dry_run=True, paths=[str(workdir)])
    assert sorted(c.path for c in dry.cleared) == sorted(boot.paths())
    assert all(c.owner_after == "0:0" and c.removed["ref_dac"] == "1" for c in dry.cleared)
    assert describe(boot.paths()) == leaked, "a dry run changed something"

    done = repair.repair(conn, paths=[str(workdir)])
    assert sorted(c.path for c in done.cleared) == sorted(boot.paths()) and not done.skipped
    assert describe(boot.paths()) == {p: ((0, 0), {}) for p in boot.paths()}
    boot_once(conn, f"{prefix}again", boot, workdir, virt_type)
    assert describe(boot.paths()) == {p: ((0, 0), {}) for p in boot.paths()}


@pytest.mark.guest
def test_repair_never_touches_files_a_running_vm_uses(conn, prefix, workdir, micro_image, virt_type):
    boot = private_boot_files(micro_image, workdir / "boot")
    leak_records(conn, f"{prefix}leak", boot, workdir, virt_type)
    dom, log = define(conn, f"{prefix}run", boot, workdir, virt_type)
    dom.create()
    log.wait_for("KVMKIT-GUEST-READY", timeout=90)
    running = describe(boot.paths())
    assert all(r["ref_dac"] == "2" for _o, r in running.values())  # the leaked reference and this VM's

    res = repair.repair(conn, paths=[str(workdir)])
    assert res.cleared == [] and sorted(k.path for k in res.kept) == sorted(boot.paths())
    assert all(k.vms == [dom.name()] and k.refs == 2 for k in res.kept)
    assert describe(boot.paths()) == running
    verdict = check.check_security_records(*repair.find(conn, [str(workdir)]))
    assert verdict.status == "pass" and "in use by running VMs" in verdict.detail

    dom.destroy()  # libvirt counts down to the leaked 1 and keeps the QEMU user as owner
    assert all(o == QEMU and r["ref_dac"] == "1" for o, r in describe(boot.paths()).values())
    res = repair.repair(conn, paths=[str(workdir)])
    assert sorted(c.path for c in res.cleared) == sorted(boot.paths())
    assert describe(boot.paths()) == {p: ((0, 0), {}) for p in boot.paths()}


@pytest.mark.guest
def test_cli_host_repair_and_host_check(conn, prefix, workdir, micro_image, virt_type):
    boot = private_boot_files(micro_image, workdir / "boot")
    leak_records(conn, f"{prefix}leak", boot, workdir, virt_type)
    dry = json.loads(kvmkit("--json", "host", "repair", "--dry-run", "--path", str(workdir)).stdout)
    assert dry["dry_run"] is True and sorted(c["path"] for c in dry["cleared"]) == sorted(boot.paths())
    assert all(records(p)["ref_dac"] == "1" for p in boot.paths())
    stamps = {p: records(p)["timestamp_dac"] for p in boot.paths()}  # libvirtd's idea of the boot time
    human = kvmkit("host", "repair", "--path", str(workdir)).stdout
    for p in boot.paths():
        assert f"cleared {p}: dac=+0:+0, ref_dac=1, timestamp_dac={stamps[p]}; owner 64055:64055 -> 0:0" in \
            " ".join(human.split())
        assert records(p) == {} and owner(p) == (0, 0)
    again = json.loads(kvmkit("--json", "host", "repair", "--path", str(workdir)).stdout)
    assert again["cleared"] == [] and again["scanned"] >= 2
    missing = kvmkit("host", "repair", "--path", str(workdir / "nothere"), check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr

    rep = json.loads(kvmkit("--json", "host", "check", check=False).stdout)
    by_name = {c["name"]: c for c in rep["checks"]}
    assert by_name["confinement"]["status"] == "pass" and "libvirt-qemu" in by_name["confinement"]["detail"]
    assert by_name["security_records"]["status"] in ("pass", "warn")  # other users' VMs may leave records
    assert str(workdir) not in by_name["security_records"]["detail"]
