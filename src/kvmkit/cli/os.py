"""``kvmkit os list | show``: the guest OSes kvmkit knows (libosinfo's database and kvmkit's overlay), whose
devices and sizes ``vm create --os NAME`` and ``vm import`` use (docs/os-presets.md)."""

from __future__ import annotations

from typing import Any

import typer

from kvmkit.cli.output import console, emit, table

app = typer.Typer(help="guest operating systems: what vm create --os knows (libosinfo + kvmkit's overlay)",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """guest operating systems: the presets vm create --os applies (libosinfo's db + kvmkit's overlay)"""


@app.command("list")
def list_(family: str = typer.Option(None, "--family", help="only this family or distro: linux, winnt, debian, "
                                     "win, fedora ...")) -> None:
    """Every OS known, with where its entry came from (system osinfo-db, kvmkit overlay, local additions)."""
    from kvmkit.service.osinfo.lookup import list_os

    rows = list_os(family)

    def human(items: list[dict[str, Any]]) -> None:
        table([{**r, "source": r["source"] + (f" (replaces {r['replaces']})" if r["replaces"] else "")}
               for r in items], ["short_id", "name", "version", "family", "distro", "release_date", "source"])

    emit(rows, human)


@app.command()
def show(name: str = typer.Argument(..., help="short id (debian12, win11) or osinfo id; a newer unknown release "
                                    "falls back to the nearest known one")) -> None:
    """One OS: identity, source, inheritance, devices, resources, firmware and the preset vm create applies."""
    from kvmkit.service.osinfo.catalog import show_os

    emit(show_os(name), _human)


def _size(n: int | None, unit: int = 1024**3, suffix: str = "GiB") -> str:
    return "-" if not n else f"{n / unit:g} {suffix}"


def _human(d: dict[str, Any]) -> None:
    from rich.markup import escape

    out = console()
    if d.get("message"):
        style = "yellow" if d["fallback"] else "dim"
        console(stderr=True).print(f"[{style}]{'warning: ' if d['fallback'] else ''}{escape(d['message'])}[/]")
    out.print(f"[bold]{escape(d['short_id'])}[/]  {escape(d['name'])}  ({escape(d['id'])})")
    replaced = f", replacing the {d['replaces']} entry" if d.get("replaces") else ""
    rows = [("source", f"{d['source_name']}{replaced}: {d['path']}"), ("family", d["family"]),
            ("distro", d["distro"]), ("version", d["version"]), ("released", d["release_date"]),
            ("end of life", d["eol_date"]), ("derives from", ", ".join(d["derives_from"])),
            ("inherits", ", ".join(d["inherits_from"]))]
    for key, value in rows:
        if value:
            out.print(f"  {key:<13} {escape(str(value))}")
    for kind, res in d["resources"].items():
        out.print(f"  {kind:<13} ram {_size(res.get('ram'), 1024**2, 'MiB')}, vcpus {res.get('n_cpus') or '-'}, "
                  f"disk {_size(res.get('storage'))}")
    for fw in d["firmware"]:
        feats = ", ".join(f"{f['name']}{' (required)' if f['required'] else ''}" for f in fw["features"])
        out.print(f"  firmware      {fw['type']}{'' if fw['supported'] else ' (not supported)'}"
                  f"{f': {feats}' if feats else ''}")
    p = d["preset"]
    firmware = ("UEFI" if p["uefi_required"] else "BIOS (UEFI with --firmware uefi)" if p["uefi_supported"]
                else "BIOS")
    out.print(f"  preset        machine {p['machine'] or 'pc'}, disk bus {p['disk_bus']}, NIC {p['nic_model']}, "
              f"{firmware}"
              f"{' + Secure Boot' if p['secure_boot'] else ''}{', TPM 2.0' if p['tpm'] else ''}"
              f"{', VNC' if p['graphics'] else ''}; memory {p['memory_mib'] or '-'} MiB, vcpus {p['vcpus'] or '-'}")
    devs = ", ".join(x["name"] or x["id"] for x in d["devices"])
    if devs:
        out.print(f"  devices       {escape(devs)}")
    if d["variants"]:
        out.print(f"  variants      {escape(', '.join(v['id'] for v in d['variants']))}")
