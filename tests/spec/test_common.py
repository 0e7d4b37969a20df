"""Sizes, names, CPU lists and MACs: the checks every spec shares."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvmkit.errors import InvalidInput
from kvmkit.spec.common import parse_size_bytes, parse_size_mib, validate_cpuset, validate_mac, validate_name

pytestmark = pytest.mark.fast


@pytest.mark.parametrize(("text", "mib"), [
    ("512M", 512), ("1G", 1024), ("1GiB", 1024), ("2048", 2048), (2048, 2048), ("10G", 10240),
    ("1.5G", 1536), ("512MiB", 512), ("1T", 1024 * 1024), (" 256 m ", 256), ("524288K", 512),
])
def test_sizes_in_mib(text, mib):
    assert parse_size_mib(text) == mib


def test_size_in_bytes():
    assert parse_size_bytes("10G") == 10 * 1024**3
    assert parse_size_bytes("2048") == 2048 * 1024**2


@pytest.mark.parametrize("bad", ["12Q", "", "M", "-1G", "0", 0, "1.5.2G", "ten", "1 G B", True])
def test_bad_sizes_name_the_field(bad):
    with pytest.raises(InvalidInput) as err:
        parse_size_mib(bad, "memory")
    assert err.value.message.startswith("memory")
    assert "512M" in (err.value.hint or "") or "zero" in err.value.message


def test_size_not_whole_mib_is_refused():
    with pytest.raises(InvalidInput, match="whole number of MiB"):
        parse_size_mib("1000K")


@pytest.mark.parametrize("bad", ["a/b", "<x>", "", "x" * 65, "-lead", ".dot", "sp ace", "tab\t", "é"])
def test_bad_names(bad):
    with pytest.raises(InvalidInput) as err:
        validate_name(bad, "VM name")
    assert "VM name" in err.value.message
    assert err.value.hint and "1-64" in err.value.hint


def test_name_lengths():
    assert validate_name("x" * 64) == "x" * 64
    assert validate_name("a") == "a"


@given(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z"))
def test_every_name_matching_the_rule_is_accepted(name):
    assert validate_name(name) == name


@given(st.text(min_size=1, max_size=80).filter(lambda s: any(c in s for c in "/<>&'\" \n")))
def test_names_with_path_or_markup_characters_are_refused(name):
    with pytest.raises(InvalidInput):
        validate_name(name)


def test_cpusets_and_macs():
    assert validate_cpuset("0-3,^2") == "0-3,^2"
    with pytest.raises(InvalidInput):
        validate_cpuset("0-a")
    assert validate_mac("52-54-00-AA-bb-01") == "52:54:00:aa:bb:01"
    with pytest.raises(InvalidInput, match="multicast"):
        validate_mac("01:00:5e:00:00:01")
    with pytest.raises(InvalidInput):
        validate_mac("52:54:00:00:00")
