"""The sysfs/procfs module: real reads and writes with exact restore."""

from __future__ import annotations

import pytest

from kvmkit.errors import HostError, InvalidInput
from kvmkit.host import sysfs


@pytest.mark.fast
def test_sysctl_names_are_checked():
    assert str(sysfs.sysctl_path("vm.dirty_ratio")) == "/proc/sys/vm/dirty_ratio"
    for bad in ("vm", "../etc/passwd", "vm./../x", "vm.dirty ratio"):
        with pytest.raises(InvalidInput):
            sysfs.sysctl_path(bad)
    with pytest.raises(InvalidInput):
        sysfs.checked_sysfs_path("/etc/passwd")
    with pytest.raises(InvalidInput):
        sysfs.checked_sysfs_path("/sys/../etc/passwd")


@pytest.mark.fast
def test_choice_files_record_the_selected_value():
    assert sysfs.choice("none [mq-deadline] kyber") == ("mq-deadline", ["none", "mq-deadline", "kyber"])
    selected, options = sysfs.read_choice(sysfs.THP_DIR / "enabled")
    assert selected in options and sysfs.current(sysfs.THP_DIR / "enabled") == selected


@pytest.mark.fast
def test_write_then_restore_is_exact(tunables_saved):
    path = sysfs.sysctl_path("vm.dirty_ratio")
    before = sysfs.read(path)
    change = sysfs.write(path, int(before) + 1)
    assert (change.before, change.after, sysfs.read(path)) == (before, str(int(before) + 1), str(int(before) + 1))
    sysfs.restore([change])
    assert sysfs.read(path) == before


@pytest.mark.fast
def test_errors_name_the_file():
    with pytest.raises(HostError, match="/proc/sys/vm/no_such_knob"):
        sysfs.read(sysfs.sysctl_path("vm.no_such_knob"))
    with pytest.raises(InvalidInput, match="dirty_ratio"):
        sysfs.write(sysfs.sysctl_path("vm.dirty_ratio"), "lots")
