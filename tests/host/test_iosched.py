"""IO schedulers: get and set on a real loop block device, unknown names refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kvmkit.errors import InvalidInput, NotFound
from kvmkit.host import iosched

KVMKIT = [sys.executable, "-m", "kvmkit"]


@pytest.mark.fast
def test_set_and_restore_on_a_loop_device(loop_device):
    path = Path(f"/sys/block/{loop_device}/queue/scheduler")
    before = iosched.get(loop_device)
    assert before["scheduler"] in before["available"]
    other = next(s for s in ("mq-deadline", "none", "bfq", "kyber") if s in before["available"]
                 and s != before["scheduler"])
    after = iosched.set_scheduler(f"/dev/{loop_device}", other)
    assert after["scheduler"] == other and after["previous"] == before["scheduler"]
    assert f"[{other}]" in path.read_text()
    iosched.set_scheduler(loop_device, before["scheduler"])
    assert f"[{before['scheduler']}]" in path.read_text()


@pytest.mark.fast
def test_unknown_scheduler_names_the_available_ones(loop_device):
    with pytest.raises(InvalidInput) as err:
        iosched.set_scheduler(loop_device, "cfq")
    assert "cfq" in err.value.message and all(s in err.value.hint for s in iosched.get(loop_device)["available"])
    with pytest.raises(NotFound, match="kt-nodev"):
        iosched.get("kt-nodev")
    with pytest.raises(InvalidInput):
        iosched.get("../etc")


@pytest.mark.fast
def test_cli_iosched(loop_device):
    before = iosched.get(loop_device)["scheduler"]
    other = "mq-deadline" if before != "mq-deadline" else "none"
    try:
        res = subprocess.run([*KVMKIT, "host", "iosched", loop_device, other, "--json"], capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["scheduler"] == other
        bad = subprocess.run([*KVMKIT, "host", "iosched", loop_device, "cfq"], capture_output=True, text=True,
                             timeout=60)
        assert bad.returncode != 0 and "error: unknown IO scheduler 'cfq'" in bad.stderr and "available:" in bad.stderr
    finally:
        iosched.set_scheduler(loop_device, before)
    assert iosched.get(loop_device)["scheduler"] == before
