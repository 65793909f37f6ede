"""Two gateway processes, one registry, one Redis: one rate limit and one quota between them."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from security.conftest import SecureServer  # by path: several folders have a conftest.py

REDIS = ("127.0.0.1", 6379)


def redis_up() -> bool:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def gateways(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SecureServer, SecureServer]]:
    if not redis_up():
        if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis at 127.0.0.1:6379 is required")
        pytest.skip("no Redis at 127.0.0.1:6379")
    shared: Path = tmp_path_factory.mktemp("shared")
    env = {
        "COLDBREW_AUTH": "on",
        "COLDBREW_API_KEY": "",
        "COLDBREW_DATABASE_URL": f"sqlite:///{shared / 'registry.db'}",
        "COLDBREW_REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
    }
    first = SecureServer(tmp_path_factory.mktemp("gw1"), env=env)
    second = SecureServer(tmp_path_factory.mktemp("gw2"), env=env)
    first.start()
    try:
        second.start()
        try:
            first.home = second.home = shared  # keys go to the shared registry
            yield first, second
        finally:
            second.stop()
    finally:
        first.stop()


def test_two_gateways_share_one_limit(gateways: tuple[SecureServer, SecureServer]) -> None:
    first, second = gateways
    key = first.make_key("invoker", ("*",), rate_per_s=0.01, burst=4, name=uuid.uuid4().hex)
    statuses = []
    for i in range(6):
        gateway = (first, second)[i % 2]
        with gateway.as_(key) as client:
            statuses.append(client.post("/v1/functions/missing/invoke", json={}).status_code)
    assert statuses == [404, 404, 404, 404, 429, 429]


def test_two_gateways_share_one_quota(gateways: tuple[SecureServer, SecureServer]) -> None:
    first, second = gateways
    key = first.make_key("invoker", ("*",), daily_quota=3, monthly_quota=10)
    statuses = []
    for i in range(5):
        with (first, second)[i % 2].as_(key) as client:
            response = client.post("/v1/functions/missing/invoke", json={})
            statuses.append(response.status_code)
    assert statuses == [404, 404, 404, 429, 429]
    assert response.json()["error"]["code"] == "QUOTA_EXCEEDED"
