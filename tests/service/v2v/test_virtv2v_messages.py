"""warnings_of(): virt-v2v's warnings as import notes, from the lines virt-v2v-in-place 2.2 printed here
while converting the UEFI Debian guest (--machine-readable: a JSON message on stdout, the same warning as a
wrapped line on stderr)."""

from __future__ import annotations

import pytest

from kvmkit.service.v2v.virtv2v import warnings_of

pytestmark = pytest.mark.fast

JSON = ('{ "message": "could not determine a way to update the configuration of Grub2", '
        '"timestamp": "2026-12-07T17:06:29.833338898+00:00", "type": "warning" }')
STAGES = ["[   0.0] Setting up the source: -i libvirtxml /tmp/x.xml", "[  25.3] Converting 12.15 to run on KVM"]
HUMAN = ["virt-v2v-in-place: warning: could not determine a way to update the", "configuration of Grub2"]


def test_the_json_warning_is_taken_once_and_no_raw_json_is_left() -> None:
    assert warnings_of([*STAGES, JSON, JSON, *HUMAN[:1]]) == [
        "virt-v2v warning: could not determine a way to update the configuration of Grub2"]


def test_without_json_the_warning_lines_are_kept_and_json_fragments_dropped() -> None:
    fragment = '"timestamp": "2026-12-07T17:06:29+00:00", "type": "warning" }'
    assert warnings_of([*STAGES, *HUMAN[:1], fragment]) == HUMAN[:1]
    assert warnings_of(STAGES) == []
