"""A real ``coldbrew serve`` (the CLI's own command) for the CLI tests, plus a CliRunner."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from cli_support import ServeProcess
from typer.testing import CliRunner


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    running = ServeProcess(tmp_path_factory.mktemp("cli-home"))
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()


@pytest.fixture
def runner() -> CliRunner:
    # Wide enough that rich never wraps a table cell the tests look for.
    return CliRunner(env={"COLUMNS": "200", "COLDBREW_URL": None})
