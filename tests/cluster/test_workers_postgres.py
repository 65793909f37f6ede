"""``coldbrew serve --workers 2`` on PostgreSQL (``COLDBREW_DATABASE_URL``): the registry and
the async queue are shared by the two workers through the database, not a file.

A deploy made through one worker is served by both (each reads the version from the shared
registry and starts its own instance), and async events accepted by either run once each,
although both workers poll the one queue."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from workers_support import Workers

from support import pack_folder, write_bundle

ECHO = "import os\n\ndef handler(event, context):\n    return {'echo': event, 'pid': os.getpid()}\n"
ASYNC = "handler = 'handler:handler'\n\n[destinations]\non_success = 'results'\n"


@pytest.fixture(scope="module")
def on_postgres(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, postgres_url: str
) -> Iterator[Workers]:
    env = {
        "COLDBREW_DATABASE_URL": postgres_url,
        "COLDBREW_REDIS_URL": redis_url,
        "COLDBREW_ASYNC_VISIBILITY_S": "2",
        "COLDBREW_ASYNC_POLL_S": "0.1",
    }
    running = Workers(tmp_path_factory.mktemp("pg-workers") / "home", 2, env)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def test_a_deploy_through_one_worker_is_served_by_both(
    on_postgres: Workers, tmp_path: Path
) -> None:
    folder = write_bundle(tmp_path / "echo", ECHO, ASYNC)
    with on_postgres.worker_client(0) as first:
        response = first.post(
            "/v1/functions",
            data={"name": "pg-echo"},
            files={"file": ("b.tgz", pack_folder(folder))},
        )
        assert response.status_code == 201, response.text
    pids = set()
    for index in (1, 0):  # the other worker first: it never saw the deploy happen
        with on_postgres.worker_client(index) as client:
            answer = client.post("/v1/functions/pg-echo/invoke", json={"w": index})
            assert answer.status_code == 200, answer.text
            assert answer.json()["echo"] == {"w": index}
            pids.add(answer.json()["pid"])
    assert len(pids) == 2, "each worker runs the function in an instance of its own"

    accepted = []
    for i in range(6):  # through both workers
        with on_postgres.worker_client(i % 2) as client:
            answer = client.post("/v1/functions/pg-echo/invoke?async=1", json={"i": i})
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["request_id"])
    deadline = time.monotonic() + 30
    runs: list[str] = []
    while time.monotonic() < deadline and set(runs) != set(accepted):
        runs = _result_ids(on_postgres)
        time.sleep(0.2)
    assert set(runs) == set(accepted), "every accepted event ran"
    time.sleep(2.5)  # past the visibility timeout: a second lease of one event would show now
    runs = _result_ids(on_postgres)
    assert sorted(runs) == sorted(accepted), "each event ran once"


def _result_ids(workers: Workers) -> list[str]:
    page = workers.client.get("/v1/functions/pg-echo/results", params={"limit": 1000}).json()
    return [str(r["requestContext"]["requestId"]) for r in page["results"]]
