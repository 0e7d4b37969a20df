"""The ``kvmkit`` command: a thin shell over kvmkit's service layer.

Command groups live one per module or package (cli/net.py, cli/vm/, cli/host/, ...), each exposing a
``typer.Typer`` named ``app``. Only the group named on the command line is imported, so ``kvmkit vm list``
does not pay for the server or the portal. ``--json`` and ``--connect`` are global and may stand anywhere.
"""

from __future__ import annotations

import importlib
import os
import sys

# name -> (module under kvmkit.cli, one-line help)
GROUPS: dict[str, tuple[str, str]] = {
    "host": ("host", "check, inspect and tune this host (and add other hosts)"),
    "image": ("image", "disk images: info, convert, and guest images built from packages"),
    "vm": ("vm", "virtual machines: create, list, lifecycle, resources, consoles"),
    "snapshot": ("snapshot", "VM snapshots: create, list, revert, delete"),
    "pool": ("pool", "storage pools: dir, fs, netfs, logical, iscsi"),
    "volume": ("volume", "storage volumes: create, clone, resize, upload, download"),
    "net": ("net", "virtual networks and host bridges"),
    "template": ("template", "templates: mark qcow2 volumes as templates for fast VM creation"),
    "os": ("os", "guest operating systems: the presets of vm create --os (libosinfo + kvmkit's overlay)"),
    "guest": ("guest", "a shut-off VM's guest file systems: inspect, ls, cat, df, copy-in, copy-out"),
    "serve": ("serve", "run the REST API server and web portal"),
    "user": ("user", "users of the server and portal"),
    "token": ("token", "API tokens"),
    "demo": ("demo", "boot a demo micro-guest VM and print how to reach its console"),
    "cli-server": ("cli_server", "keep a warm process so kvmkit commands start in milliseconds"),
}
NOT_DELEGATED = {"serve", "cli-server"}  # long-running: always run in the caller's own process

USAGE = """Usage: kvmkit [--json] [--connect URI] [--host NAME] [--db URL] COMMAND [ARGS]...

  kvmkit: manage KVM hosts, VMs, storage and networks through libvirt.

  Global options (anywhere on the line): --json prints one JSON document on stdout;
  --connect URI picks the local host's libvirt (env KVMKIT_CONNECT, default qemu:///system);
  --host NAME works on a host of the inventory instead (kvmkit host add; `local` is --connect's);
  --db URL is the database holding users, tokens and the inventory (env KVMKIT_DB).
  Run `kvmkit COMMAND --help` for a command's own help.

Commands:
"""


_AVAILABLE: dict[str, str] = {}


def _available() -> dict[str, str]:
    """The command groups whose module is installed (looked up once per process)."""
    if not _AVAILABLE:
        from importlib.util import find_spec

        _AVAILABLE.update((name, help_) for name, (mod, help_) in GROUPS.items()
                          if find_spec(f"kvmkit.cli.{mod}") is not None)
    return _AVAILABLE


def _usage() -> str:
    groups = _available()
    width = max(len(n) for n in groups)
    return USAGE + "".join(f"  {name:<{width}}  {help_}\n" for name, help_ in groups.items())


def _fail(message: str, hint: str | None, code: int = 1, kind: str = "error") -> int:
    from kvmkit.cli.context import settings

    if settings.json:
        import json

        sys.stdout.write(json.dumps({"error": message, "hint": hint, "code": kind}) + "\n")
    sys.stderr.write(f"error: {message}\n")
    if hint:
        sys.stderr.write(f"hint: {hint}\n")
    return code


def _dispatch(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0
    if args[0] == "--version":
        from kvmkit import __version__

        sys.stdout.write(f"kvmkit {__version__}\n")
        return 0
    name = args[0]
    if name not in _available():
        return _fail(f"unknown command '{name}'", "run `kvmkit --help` for the list of commands", 2, "usage")
    command = _command(name)
    # without standalone mode Typer returns the code of `typer.Exit(code)` and turns Ctrl-C into 130
    code = command.main(args=args[1:], prog_name=f"kvmkit {name}", standalone_mode=False)
    if not isinstance(code, int) or isinstance(code, bool):
        return 0  # a command's own return value, not an exit code
    return _fail("interrupted", None, 130) if code == 130 else code


_COMMANDS: dict = {}  # group name -> its Click command, built once per process (the warm server: before forking)


def _command(name: str):  # -> click.Command (typer's; not imported at module level: lean start-up)
    if name not in _COMMANDS:
        import typer.main

        module = importlib.import_module(f"kvmkit.cli.{GROUPS[name][0]}")
        _COMMANDS[name] = typer.main.get_command(module.app)
    return _COMMANDS[name]


def build_commands() -> None:
    """Build every group's Click command now (the warm server does, so its children need not)."""
    for name in _available():
        if name not in NOT_DELEGATED:
            _command(name)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    from kvmkit.cli.context import apply_globals, extract_globals
    from kvmkit.errors import KvmkitError

    args = extract_globals(list(sys.argv[1:] if argv is None else argv))
    apply_globals()
    try:
        return _dispatch(args)
    except KvmkitError as err:
        return _fail(err.message, err.hint, kind=err.code)
    except KeyboardInterrupt:
        return _fail("interrupted", None, 130)
    except Exception as exc:
        import typer

        if isinstance(exc, typer.Exit):
            return int(exc.exit_code or 0)
        if isinstance(exc, typer.Abort):
            return _fail("aborted", None, 130)
        if isinstance(exc, typer.TyperException) and hasattr(exc, "format_message"):
            code = int(getattr(exc, "exit_code", 2))
            return _fail(exc.format_message(), "see --help", code, "usage")
        if type(exc).__name__ == "ValidationError" and hasattr(exc, "errors"):
            from kvmkit.cli.validation import describe

            msg, hint = describe(exc)
            return _fail(msg, hint, kind="invalid")
        raise


def run_here(argv: list[str]) -> int:
    """Run ``argv`` in this process: the lean path when it serves it, else Typer."""
    from kvmkit.cli.fastpath import try_run

    return 0 if try_run(argv) else main(argv)


def run() -> None:
    """The ``kvmkit`` entry point: the warm server if one runs, else this process."""
    argv = sys.argv[1:]
    if not NOT_DELEGATED & set(argv[:3]):
        from kvmkit.cli.warm import try_delegate

        code = try_delegate(argv)
        if code is not None:
            os._exit(code)  # nothing of ours to flush or finalize: the child wrote the output
    sys.exit(run_here(argv))
