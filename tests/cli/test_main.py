"""The CLI shell: global --json/--connect, usage errors, lazy groups."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from kvmkit.cli.context import Settings, extract_globals, settings

KVMKIT = [sys.executable, "-m", "kvmkit"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KVMKIT, *args], capture_output=True, text=True, timeout=60)


@pytest.mark.fast
def test_globals_are_taken_from_anywhere():
    settings.__dict__.update(Settings().__dict__)
    rest = extract_globals(["vm", "list", "--json", "--connect", "test:///default", "--all"])
    assert rest == ["vm", "list", "--all"]
    assert settings.json and settings.connect == "test:///default"
    settings.__dict__.update(Settings().__dict__)


@pytest.mark.fast
def test_help_lists_groups():
    res = run("--help")
    assert res.returncode == 0
    assert "host" in res.stdout and "image" in res.stdout


@pytest.mark.fast
def test_unknown_command_is_a_usage_error():
    res = run("frobnicate", "--json")
    assert res.returncode == 2
    assert res.stderr.startswith("error: unknown command 'frobnicate'")
    assert json.loads(res.stdout)["code"] == "usage"


@pytest.mark.fast
def test_bad_connect_uri_is_one_clear_error():
    res = run("host", "prepare", "--connect", "qemu+unix:///system?socket=/nonexistent.sock")
    assert res.returncode == 1
    first = res.stderr.splitlines()[0]
    assert first.startswith("error: cannot connect to qemu+unix:///system")
    assert "Traceback" not in res.stderr


@pytest.mark.fast
def test_image_build_micro_json(micro_image):
    res = run("image", "build", "micro", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["key"] == micro_image.key


@pytest.mark.fast
def test_host_check_exits_1_when_the_host_is_not_ready():
    # typer.Exit(1) from a command must reach the shell (it used to be returned and dropped)
    res = run("host", "check", "--json", "--connect", "qemu+unix:///system?socket=/nonexistent.sock")
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout)["ready"] is False


@pytest.mark.fast
def test_no_command_has_an_option_that_a_global_option_would_swallow():
    """--json, --connect and --host are taken out of argv wherever they stand (kvmkit.cli.context), so a
    command's own option of that name would never see its value (``net create --host`` once meant a DHCP
    reservation and failed with 'host ... is not in the inventory')."""
    import click

    from kvmkit.cli.context import _VALUED
    from kvmkit.cli.main import _available, _command

    def options(cmd: click.Command, path: str):
        for param in cmd.params:
            for opt in getattr(param, "opts", []):
                yield path, opt
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from options(sub, f"{path} {name}")

    swallowed = {*_VALUED, "--json"}
    clashes = [(path, opt) for group in sorted(_available()) for path, opt in options(_command(group), group)
               if opt in swallowed]
    assert clashes == []
