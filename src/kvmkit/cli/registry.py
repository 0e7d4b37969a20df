"""Attach commands from several modules to one Typer group (e.g. ``vm`` = define + lifecycle + copy ...).

Each listed module (a name under kvmkit.cli, e.g. ``vm.define``) defines ``register(app)``. A listed module
that is missing is an error, not a group with fewer commands.
"""

from __future__ import annotations

import importlib

import typer


def register_all(app: typer.Typer, modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(f"kvmkit.cli.{name}").register(app)
