"""The migration specs: live-only options refused for offline moves, names checked."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from kvmkit.spec.migration import EvacuateSpec, MigrateSpec

pytestmark = pytest.mark.fast


def test_defaults_and_options() -> None:
    spec = MigrateSpec(to="b")
    assert (spec.mode, spec.copy_storage, spec.bandwidth_mib, spec.postcopy) == (None, False, None, False)
    assert MigrateSpec(to="b", mode="live", bandwidth_mib=100, auto_converge=True, postcopy=True).bandwidth_mib == 100


@pytest.mark.parametrize("extra", [{"postcopy": True}, {"auto_converge": True}, {"bandwidth_mib": 5}])
def test_live_only_options_refused_offline(extra: dict) -> None:
    with pytest.raises(ValidationError, match="live migration only"):
        MigrateSpec(to="b", mode="offline", **extra)


@pytest.mark.parametrize("bad", [{"to": "no such/host"}, {"to": "b", "bandwidth_mib": 0}, {"to": "b", "x": 1},
                                 {"to": "b", "mode": "direct"}])
def test_invalid(bad: dict) -> None:
    with pytest.raises(ValidationError):
        MigrateSpec(**bad)


def test_evacuate_spec() -> None:
    assert EvacuateSpec().include_shut_off and EvacuateSpec(to=["a", "b"]).to == ["a", "b"]
    with pytest.raises(ValidationError):
        EvacuateSpec(to=["../x"])
