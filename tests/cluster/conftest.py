"""Fixtures of the cluster tests: Redis on 127.0.0.1 (skip without it, fail under
COLDBREW_REQUIRE_SERVICES=1); no private /tmp mount outlives the session."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from ray_support import detach_mounts_below

REDIS = ("127.0.0.1", 6379)


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
    except OSError:
        if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis at 127.0.0.1:6379 is required (COLDBREW_REQUIRE_SERVICES=1)")
        pytest.skip("no Redis at 127.0.0.1:6379")
    return f"redis://{REDIS[0]}:{REDIS[1]}/0"


@pytest.fixture(scope="session", autouse=True)
def no_mounts_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Whatever a test left mounted below this session's base folder (a node agent or
    template killed before it could unmount) is detached at the end: never on a CI machine."""
    yield
    detach_mounts_below(tmp_path_factory.getbasetemp())
