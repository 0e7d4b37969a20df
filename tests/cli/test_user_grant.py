"""``kvmkit user grant`` binds the grant to the VM's UUID (it needs the VM to exist), like the API."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support.cli_run import kvmkit

pytestmark = pytest.mark.guest


def test_cli_grant_is_bound_to_the_vm_uuid(micro_guest, prefix: str, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/kvmkit.db"
    vm = micro_guest("cg", start=False)
    kvmkit("user", "add", f"{prefix}u", "--role", "operator", "--db", db)
    kvmkit("user", "grant", f"{prefix}u", vm.name, "--db", db)
    with sqlite3.connect(tmp_path / "kvmkit.db") as c:
        rows = c.execute("SELECT vm_name, vm_uuid FROM vm_grants").fetchall()
    assert rows == [(vm.name, vm.dom.UUIDString())]
    res = kvmkit("user", "grant", f"{prefix}u", f"{prefix}none", "--db", db, check=False)
    assert res.returncode == 1 and "not found" in res.stderr and "Traceback" not in res.stderr
