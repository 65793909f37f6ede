"""Example 2, geo-aware photo classification, end to end with the machine's PostgreSQL and Redis.

Photos carry EXIF GPS written by Pillow; the bundle's ``key_fn`` reads it back into a grid
cell; the region of the cell is a declared feature lookup (SQL in PostgreSQL, a Redis cache
shared by the instances); the handler classifies the landscape with both. A skewed (Zipf) load
of sporadic photos from 4 concurrent clients, then the cache hit rate as ``/metrics`` counts it.
Skips without PostgreSQL or Redis unless COLDBREW_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from sqlalchemy import create_engine, text

from support import Server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "geo_photos"
REDIS = ("127.0.0.1", 6379)
PHOTOS = 400


def _train() -> ModuleType:
    spec = importlib.util.spec_from_file_location("geo_train_under_test", EXAMPLE / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Any]:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
    except OSError:
        if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
            pytest.fail("no Redis at 127.0.0.1:6379 (COLDBREW_REQUIRE_SERVICES=1)")
        pytest.skip("no Redis at 127.0.0.1:6379")
    train = _train()
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        # The session's test database is shared: tests/data has a `regions` table of its own.
        conn.execute(text("drop table if exists regions"))
        conn.execute(text("drop table if exists lookups_seen"))
        conn.execute(
            text(
                "create table regions (cell text primary key, region text, rainfall real,"
                " elevation real)"
            )
        )
        conn.execute(
            text("insert into regions values (:c, :r, :rain, :elev)"),
            [{"c": c, "r": r, "rain": rain, "elev": e} for c, r, rain, e in train.regions()],
        )
        conn.execute(text("create table lookups_seen (n int)"))
    engine.dispose()
    bundle = tmp_path_factory.mktemp("clone") / "geo_photos"
    shutil.copytree(EXAMPLE, bundle, ignore=shutil.ignore_patterns("model.*", "__pycache__"))
    train.build(bundle)
    # The example's 500 ms lookup timeout answers the declared default when the database is
    # slow; on a busy test machine a first connection can take that long, and this test
    # checks the looked-up region itself.
    config = bundle / "coldbrew.toml"
    config.write_text(config.read_text().replace("timeout_ms = 500", "timeout_ms = 10000"))
    server = Server(
        tmp_path_factory.mktemp("geo-home"),
        env={"COLDBREW_FEATURE_CACHE_URL": f"redis://{REDIS[0]}:{REDIS[1]}/5"},
    )
    server.start()
    name = f"geo-{uuid.uuid4().hex[:6]}"  # its own cache keys on a shared Redis
    try:
        put = server.client.put("/v1/secrets/geo-db", content=postgres_url.encode())
        assert put.status_code == 200, put.text
        answer = server.deploy_folder(name, bundle)
        assert answer.status_code == 201, answer.text
        yield server, name, train
    finally:
        server.stop()


def _lookups(server: Server, name: str) -> dict[str, float]:
    text_ = server.client.get("/metrics").text
    out: dict[str, float] = {}
    pattern = rf'coldbrew_feature_lookups_total\{{([^}}]*function="{name}"[^}}]*)\}} (\S+)'
    for labels, value in re.findall(pattern, text_):
        result = re.search(r'result="(\w+)"', labels)
        if result:
            out[result.group(1)] = out.get(result.group(1), 0) + float(value)
    return out


def test_skewed_load_hits_the_cache_and_uses_the_region(deployed: Any) -> None:
    server, name, train = deployed
    rng = np.random.default_rng(11)
    cells = {c: (c, r) for c, r, _, _ in train.regions()}
    centres = {c: (int(c[1:3]) + 0.5, int(c[4:7]) + 0.5) for c in cells}
    order = sorted(cells)
    # Zipf(1.3) over the 60 cells: a few places send most photos, many send one or two.
    ranks = np.minimum(rng.zipf(1.3, PHOTOS), len(order)) - 1
    photos = []
    for rank in ranks:
        c = order[int(rank)]
        region = cells[c][1]
        label = train.LABELS[int(rng.choice(4, p=train.REGIONS[region][2]))]
        lat, lon = centres[c]
        data = train.photo(lat + rng.uniform(-0.4, 0.4), lon + rng.uniform(-0.4, 0.4), label, rng)
        photos.append((c, region, label, base64.b64encode(data).decode()))

    def send(chunk: list[Any]) -> list[dict[str, Any]]:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return [
                client.post(f"/v1/functions/{name}/invoke", json={"image": p[3]}).json()
                for p in chunk
            ]

    with ThreadPoolExecutor(4) as pool:
        answers = [a for part in pool.map(send, [photos[i::4] for i in range(4)]) for a in part]
    chunks = [photos[i::4] for i in range(4)]
    flat = [p for chunk in chunks for p in chunk]
    assert all("label" in a for a in answers), answers[:3]
    assert all(
        a["cell"] == p[0] and a["region"] == p[1] for a, p in zip(answers, flat, strict=True)
    )
    accuracy = sum(a["label"] == p[2] for a, p in zip(answers, flat, strict=True)) / len(flat)
    distinct = len({p[0] for p in photos})

    lookups = _lookups(server, name)
    hits, misses = lookups.get("hit", 0), lookups.get("miss", 0)
    hit_rate = hits / (hits + misses)
    print(
        f"\ngeo: {PHOTOS} photos over {distinct} cells, accuracy {accuracy:.3f},"
        f" lookups {lookups}, hit rate {hit_rate:.3f} (best possible {1 - distinct / PHOTOS:.3f})"
    )
    assert hits + misses == PHOTOS
    assert misses <= distinct + 4  # one query per cell (single flight), a few racing fills at most
    assert hit_rate >= 0.8
    assert accuracy >= 0.85


def test_a_photo_without_gps_gets_the_default_region(deployed: Any) -> None:
    server, name, _ = deployed
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 110, 50)).save(buffer, format="JPEG")
    answer = server.invoke(name, {"image": base64.b64encode(buffer.getvalue()).decode()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["region"] == "unknown" and answer.json()["cell"] is None
    bad = server.invoke(name, {"image": "not base64!"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "VALIDATION_ERROR"
