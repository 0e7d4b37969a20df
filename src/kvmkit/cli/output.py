"""How CLI commands print: one JSON document with --json, a readable Rich rendering otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kvmkit.cli.context import settings


def console(stderr: bool = False):  # -> rich.console.Console
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def text(value: str) -> None:
    """Print ``value`` exactly as it is (XML, file contents): no markup, no highlighting and no wrapping at
    the terminal's width, which would put line breaks into the text of long elements."""
    sys.stdout.write(value if value.endswith("\n") else value + "\n")
    sys.stdout.flush()


def emit(data: Any, human: Callable[[Any], None] | None = None) -> None:
    """Print ``data``: as JSON with --json, through ``human`` (or a generic view) otherwise."""
    if settings.json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    if human is not None:
        human(data)
    elif isinstance(data, str):
        console().print(data)
    else:
        console().print_json(json.dumps(data, default=str))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """Render a list of dicts as a table with the given columns."""
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold")
    for col in columns:
        t.add_column(col.upper())
    for row in rows:
        t.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console().print(t)


@contextmanager
def progress(description: str, total: float | None = None, unit: str = "bytes") -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr (silent with --json or without a terminal); yields ``advance_to(done)``.

    ``unit``: "bytes" (done/total as sizes, e.g. uploads), "percent" (total 100) or "steps" (a counter)."""
    if settings.json or not sys.stderr.isatty():
        yield lambda _done: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    amount = {"bytes": DownloadColumn(), "percent": TaskProgressColumn(), "steps": MofNCompleteColumn()}[unit]
    columns = [TextColumn("{task.description}"), BarColumn(), amount,
               TimeRemainingColumn() if total else TimeElapsedColumn()]
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)
