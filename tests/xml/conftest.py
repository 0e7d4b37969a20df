"""The corpus run's numbers at the end of the session (when tests/xml/test_corpus.py ran)."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import sys

    module = sys.modules.get("tests.xml.test_corpus")
    if module is None or not module.RESULTS:
        return
    from tests.xml.corpus_edits import report

    terminalreporter.section("libvirt XML corpus")
    for line in report(module.RESULTS[-1]):
        terminalreporter.write_line(line)
