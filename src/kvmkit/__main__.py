"""``python -m kvmkit`` runs the CLI."""

from kvmkit.cli.main import run

run()
