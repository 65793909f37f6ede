"""``coldbrew serve --workers 2``: a shadow set through one worker is applied by the other
within the registry re-read (``SYNC_INTERVAL_S``), which mirrors its own callers' invocations
and keeps its own counts; stopped through one, it is gone from both."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from cluster.workers_support import Workers
from coldbrew.delivery.shadow import SYNC_INTERVAL_S
from support import pack_folder, require_service, wait_for, write_bundle

BASE = "/v1/functions/shade/shadow"
REDIS = ("127.0.0.1", 6379)


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
    except OSError as exc:  # --workers N shares instance slots through Redis
        require_service("Redis at 127.0.0.1:6379", exc)
    base = tmp_path_factory.mktemp("shadow-workers")
    running = Workers(base / "home", 2, {"COLDBREW_REDIS_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0"})
    try:
        running.start()
        for n, label in ((1, "a"), (2, "b")):
            code = f"def handler(event, context):\n    return {{'label': '{label}'}}\n"
            folder = write_bundle(base / f"v{n}", code, "handler = 'handler:handler'\n")
            files = {"file": ("b.tar.gz", pack_folder(folder))}
            deployed = running.client.post("/v1/functions", data={"name": "shade"}, files=files)
            assert deployed.status_code in (200, 201), deployed.text
        alias = running.client.put("/v1/functions/shade/aliases/prod", json={"version": 1})
        assert alias.is_success, alias.text
        yield running
    finally:
        running.stop()


def test_every_worker_applies_a_shadow_set_through_one(workers: Workers) -> None:
    first, second = workers.worker_client(0), workers.worker_client(1)
    body = {"version": 2, "alias": "prod", "priority": "normal"}
    assert first.put(BASE, json=body).status_code == 200
    time.sleep(SYNC_INTERVAL_S + 1)  # the second worker's periodic re-read
    # Invoked before anything asks the second worker about shadows: only the periodic re-read
    # can have told it (a status request re-reads too, and would start the counts at zero).
    for _ in range(3):
        assert _invoke(second) == {"label": "a"}
        time.sleep(0.2)
    wait_for(lambda: _shadows(second)[0]["mirrored"] >= 1, 10, "the second worker's copies")
    assert _shadows(first)[0]["mirrored"] == 0  # the counts are each worker's own

    assert second.delete(BASE).json() == {"stopped": ["shade:prod"]}
    assert _shadows(first) == []
    assert first.delete(BASE).status_code == 404
    first.close()
    second.close()


def _invoke(client: httpx.Client) -> object:
    response = client.post("/v1/functions/shade:prod/invoke", json={})
    assert response.status_code == 200, response.text
    return response.json()


def _shadows(client: httpx.Client) -> list[dict]:
    return client.get(BASE).json()["shadows"]
