"""``kvmkit vm exec | set-password | eject-seed``: working in a running guest through its guest agent."""

from __future__ import annotations

import base64
import sys
from typing import Any

import typer

from kvmkit.cli.context import connection, settings
from kvmkit.cli.output import console, emit


def _raw(result: dict[str, Any], key: str) -> bytes:
    if result.get(f"{key}_b64"):
        return base64.b64decode(result[f"{key}_b64"])
    return str(result.get(key) or "").encode()


def _read_secret_file(path: str) -> str:
    from kvmkit.errors import InvalidInput

    try:
        with open(path, encoding="utf-8") as fh:
            line = fh.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidInput(f"cannot read --password-file {path}: {err}", hint="give a readable text file") from None
    if not line:
        raise InvalidInput(f"--password-file {path} is empty", hint="put the password on its first line")
    return line


def register(app: typer.Typer) -> None:
    @app.command("exec")
    def exec_(name: str = typer.Argument(..., help="VM name"),
              command: list[str] = typer.Argument(..., metavar="-- CMD [ARG]...",
                                                  help="the program and its arguments (no shell: use sh -c '...')"),
              timeout: float = typer.Option(60, "--timeout", help="seconds to wait for the command to exit"),
              input_file: str = typer.Option(None, "--input-file", help="a host file fed to the command's stdin "
                                                                        "(- for this command's stdin)")) -> None:
        """Run a command in the guest (guest agent): prints its stdout and stderr and exits with its exit code
        (128+N for signal N, 124 when it is still running after --timeout)."""
        from kvmkit.service.guests.exec import exec_command, exit_status

        data = None
        if input_file == "-":
            data = sys.stdin.buffer.read()
        elif input_file:
            with open(input_file, "rb") as fh:
                data = fh.read()
        result = exec_command(connection(), name, command, timeout=timeout, input_data=data)
        if settings.json:
            emit(result)
        else:
            sys.stdout.buffer.write(_raw(result, "stdout"))
            sys.stdout.flush()
            sys.stderr.buffer.write(_raw(result, "stderr"))
            for key in ("stdout", "stderr"):
                if result.get(f"{key}_truncated"):
                    sys.stderr.write(f"kvmkit: the guest agent cut the command's {key} (16 MiB at most)\n")
            if result.get("timed_out"):
                sys.stderr.write(f"kvmkit: {result['message']}\n")
            sys.stderr.flush()
        code = exit_status(result)
        if code:
            raise typer.Exit(code)

    @app.command("set-password")
    def set_password(name: str = typer.Argument(..., help="VM name"),
                     user: str = typer.Argument(..., help="the guest user, e.g. root"),
                     password_file: str = typer.Option(None, "--password-file",
                                                       help="read the password from this file's first line "
                                                            "(else it is asked for, twice, without echo)")) -> None:
        """Set a guest user's password through the guest agent (the password is never printed or logged)."""
        from kvmkit.service.guests.exec import set_password as set_pw

        if password_file:
            secret = _read_secret_file(password_file)
        else:
            secret = typer.prompt(f"new password for {user} in {name}", hide_input=True,
                                  confirmation_prompt=True, err=True)
        emit(set_pw(connection(), name, user, secret),
             lambda d: console().print(f"password of [bold]{d['user']}[/] set in VM [bold]{d['name']}[/]"))

    @app.command("eject-seed")
    def eject_seed(name: str = typer.Argument(..., help="VM name"),
                   wait: float = typer.Option(0, "--wait", help="seconds to wait for cloud-init to finish"),
                   force: bool = typer.Option(False, "--force", help="eject without asking the guest agent")) -> None:
        """Detach and delete the VM's cloud-init seed once the guest agent reports cloud-init done."""
        from kvmkit.service.vms.seed import eject

        with console(stderr=True).status(f"waiting up to {wait:g} s for cloud-init in {name}"):
            result = eject(connection(), name, wait=wait, force=force)
        emit(result, lambda d: console().print(f"ejected and deleted the seed {d['volume']} ({d['target']}) of "
                                               f"VM [bold]{d['name']}[/]"))
