"""Fixtures of these tests: the serial logs kvmkit writes for the test's VMs are removed afterwards."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator

import pytest


@pytest.fixture()
def logs(prefix: str) -> Iterator[None]:
    """Remove the serial logs kvmkit wrote for this test's VMs under /var/log/kvmkit."""
    yield
    for path in glob.glob(f"/var/log/kvmkit/{prefix}*"):
        os.unlink(path)
