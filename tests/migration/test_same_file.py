"""The same-file rule behind "shared storage": the destination's ctime/mtime between the source's two
readings and the same size; anything else is another file (a copy keeps mtime, never ctime)."""

from __future__ import annotations

import pytest

from kvmkit.service.migration.files import FileView, same_file

pytestmark = pytest.mark.fast


def view(ctime: str, mtime: str | None = None, capacity: int = 100) -> FileView:
    return FileView("/p", True, True, facts={"ctime": ctime, "mtime": mtime or ctime, "capacity": capacity})


def test_same_and_different() -> None:
    a = view("10.000000001")
    assert same_file(a, view("10.000000001"), a) is True
    assert same_file(a, view("10.000000002"), a) is False  # a copy made later (cp -p keeps mtime, not ctime)
    assert same_file(a, view("10.000000001", capacity=200), a) is False
    assert same_file(a, view("11.0", "10.000000001"), a) is False


def test_a_file_written_while_looked_at() -> None:
    assert same_file(view("10.0"), view("10.5"), view("11.0")) is True  # between the source's readings
    assert same_file(view("10.0"), view("12.0"), view("11.0")) is False


def test_no_timestamps_cannot_tell() -> None:
    blind = FileView("/p", True, True, facts={"capacity": 1})
    assert same_file(blind, blind, blind) is None
    assert same_file(view("1"), FileView("/p", False, True), view("1")) is None
