"""The lean `vm list --json` path prints exactly what the Typer path prints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def _list(*flags: str, fast: bool) -> list[dict]:
    env = {**os.environ, **({} if fast else {"KVMKIT_NO_FASTPATH": "1"})}
    out = subprocess.run([sys.executable, "-m", "kvmkit", "vm", "list", *flags, "--json"], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout)


@pytest.mark.guest
@pytest.mark.parametrize("flags", [(), ("--all",), ("--all", "--no-ip")])
def test_fast_and_typer_paths_agree(micro_guest, flags):
    guest = micro_guest("fp", start=False)
    fast, slow = _list(*flags, fast=True), _list(*flags, fast=False)
    assert fast == slow
    assert (guest.name in {r["name"] for r in fast}) == ("--all" in flags)


@pytest.mark.fast
def test_unknown_flags_fall_back_to_typer():
    from kvmkit.cli.fastpath import try_run

    assert not try_run(["vm", "list", "--bogus"])
    assert not try_run(["vm", "list", "--help"])
    assert not try_run(["vm", "show", "x"])
