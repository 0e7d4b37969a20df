"""Attach commands from several modules to one Typer group (e.g. ``vm`` = define + lifecycle + copy ...).

Each listed module defines ``register(app)``; modules not written yet are skipped, so areas can land
independently.
"""

from __future__ import annotations

import importlib

import typer


def register_all(app: typer.Typer, modules: list[str]) -> None:
    for name in modules:
        try:
            module = importlib.import_module(f"kvmkit.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"kvmkit.cli.{name}":
                continue
            raise
        module.register(app)
