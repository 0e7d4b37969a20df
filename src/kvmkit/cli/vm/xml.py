"""``kvmkit vm xml NAME [--inactive] [--replace FILE]``: print a VM's domain XML, or replace its definition
(validated against libvirt's schema, refused while it would drop a device the running VM uses; prints the
diff). The API's GET/PUT /api/v1/vms/{name}/xml call the same service functions (service/vms/xml_edit.py)."""

from __future__ import annotations

import sys
from typing import Any

import typer

from kvmkit.cli.context import connection
from kvmkit.cli.output import console, emit, text
from kvmkit.errors import InvalidInput


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as err:
        raise InvalidInput(f"cannot read {path}: {err.strerror}", hint="give the file with the new domain XML "
                           "(or - for standard input)") from err
    except UnicodeDecodeError as err:
        raise InvalidInput(f"{path} is not UTF-8 text", hint="give a domain XML file") from err


def _show_replaced(d: dict[str, Any]) -> None:
    out = console()
    if not d["changed"]:
        out.print(f"VM [bold]{d['name']}[/]: the definition is unchanged")
    else:
        text(d["diff"])
        out.print(f"VM [bold]{d['name']}[/]: definition replaced (applies {d['applies']})")
    for w in d["warnings"]:
        if "applies from its next start" not in w:
            out.print(f"[yellow]warning:[/] {w}")


def register(app: typer.Typer) -> None:
    @app.command("xml")
    def xml(
        name: str = typer.Argument(..., help="VM name"),
        inactive: bool = typer.Option(False, "--inactive", help="the definition used at the next start, not the "
                                      "running VM's XML"),
        replace: str | None = typer.Option(None, "--replace", metavar="FILE",
                                           help="replace the VM's definition with this XML file (- reads stdin)"),
    ) -> None:
        """Print the VM's domain XML, or replace its definition with --replace FILE (checked against libvirt's
        schema; refused while it would drop a disk, NIC or graphics device the running VM uses)."""
        from kvmkit.service.vms import xml_edit

        if replace is None:
            data = xml_edit.read_xml(connection(), name, inactive=inactive, secure=True)
            emit(data, lambda d: text(d["xml"]))
            return
        if inactive:
            raise InvalidInput("--inactive is for reading", hint="--replace always replaces the definition")
        emit(xml_edit.replace_xml(connection(), name, _read(replace)), _show_replaced)
