"""Shared fixtures (helpers live in ``support.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("coldbrew-home"))
    running.start()
    yield running
    running.stop()

