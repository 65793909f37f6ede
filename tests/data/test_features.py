"""Declared feature lookups against the machine's PostgreSQL and Redis, through a real server.

- A Zipf load over 1,000 keys on several instances: hit rate >= 90%, and at most one database
  query per key per TTL, counted by the database itself (a non-transactional sequence per key,
  bumped by the SQL function the lookup calls).
- A database outage mid-load (a TCP proxy in front of PostgreSQL stops forwarding): every
  answer is the stable FEATURES_UNAVAILABLE (503) or, where declared, the default; none hangs.

Skips without PostgreSQL or Redis unless COLDBREW_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from support import Server, write_bundle

REDIS = ("127.0.0.1", 6379)
KEYS = [f"c{i:04d}" for i in range(1000)]
PRESENT = set(KEYS[:900])  # the last 100 cells have no row: negative caching

HANDLER = """
import time

def handler(event, context):
    time.sleep(0.002)  # hold the slot a little, so the load needs several instances
    return {"cell": event["location"]["cell"], "region": context.features["region"]}
"""

CONFIG = """
handler = "handler:handler"
max_instances = 4
concurrency = 1

[secrets]
DB_URL = "{secret}"

[[features]]
name = "region"
sql = "select * from region_of(:cell)"
key = "$.location.cell"
database = "DB_URL"
cache = "{cache}"
cache_ttl_s = 300
timeout_ms = {timeout_ms}
{extra}
"""

SETUP = """
create table regions (cell text primary key, region text, elevation integer);
insert into regions select 'c' || lpad(g::text, 4, '0'), 'r' || mod(g, 17), g
  from generate_series(0, 899) g;
create function region_of(key text) returns table (region text, elevation integer)
language plpgsql as $$
begin
  perform nextval(quote_ident('hits_' || key));  -- not rolled back: counts every query
  return query select r.region, r.elevation from regions r where r.cell = key;
end $$;
"""


def expected(cell: str) -> dict[str, Any] | None:
    if cell not in PRESENT:
        return None
    n = int(cell[1:])
    return {"region": f"r{n % 17}", "elevation": n}


def _require(reason: str) -> None:
    if os.environ.get("COLDBREW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (COLDBREW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(SETUP)
        for key in KEYS:
            conn.exec_driver_sql(f'create sequence "hits_{key}"')
    engine.dispose()
    yield postgres_url


def query_counts(url: str) -> dict[str, int]:
    """Per key, how many times the database ran the lookup (sequence last_value, if called)."""
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "select sequencename, last_value from pg_sequences "
                "where sequencename like 'hits_%' and last_value is not null"
            )
        ).all()
    engine.dispose()
    return {name.removeprefix("hits_"): int(value) for name, value in rows}


class Proxy:
    """A TCP forwarder to PostgreSQL that can stop forwarding (an outage that hangs, the
    worst kind: no error, no reset, just silence)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.silent = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            if self.silent.is_set():
                continue  # accepted, never answered
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            self.sockets.append(server)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            while self.silent.is_set():
                time.sleep(0.05)  # swallow: the peer waits forever
                return
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, database: str) -> Iterator[Server]:
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
    except OSError:
        _require("no Redis at 127.0.0.1:6379")
    running = Server(
        tmp_path_factory.mktemp("features-home"),
        env={"COLDBREW_FEATURE_CACHE_URL": f"redis://{REDIS[0]}:{REDIS[1]}/3"},
    )
    running.start()
    yield running
    running.stop()


def deploy(
    server: Server,
    folder: Path,
    name: str,
    db_url: str,
    cache: str = "redis",
    timeout_ms: int = 2000,
    extra: str = "",
) -> None:
    secret = f"{name}-db"
    assert server.client.put(f"/v1/secrets/{secret}", content=db_url.encode()).status_code == 200
    config = CONFIG.format(secret=secret, cache=cache, timeout_ms=timeout_ms, extra=extra)
    answer = server.deploy_folder(name, write_bundle(folder, HANDLER, config))
    assert answer.status_code == 201, answer.text


def psycopg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def zipf_keys(n: int, seed: int, s: float = 1.2) -> list[str]:
    weights = [1 / (rank**s) for rank in range(1, len(KEYS) + 1)]
    order = KEYS[:]
    random.Random(seed).shuffle(order)  # hot keys spread over present and absent cells
    return random.Random(seed + 1).choices(order, weights=weights, k=n)


def run_load(url: str, name: str, keys: list[str], workers: int = 16) -> list[httpx.Response]:
    def one(chunk: list[str]) -> list[httpx.Response]:
        with httpx.Client(base_url=url, timeout=30) as client:
            return [
                client.post(f"/v1/functions/{name}/invoke", json={"location": {"cell": k}})
                for k in chunk
            ]

    chunks = [keys[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        return [r for part in pool.map(one, chunks) for r in part]


def metric(server: Server, name: str, result: str) -> float:
    text_ = server.client.get("/metrics").text
    pattern = (
        rf'coldbrew_feature_lookups_total\{{feature="region",function="{name}",'
        rf'result="{result}"\}} ([0-9.e+]+)'
    )
    found = re.search(pattern, text_)
    return float(found.group(1)) if found else 0.0


def test_zipf_load_hits_the_cache_and_queries_each_key_once(
    server: Server, database: str, tmp_path: Path
) -> None:
    name = f"geo-{uuid.uuid4().hex[:8]}"  # a fresh Redis namespace on every run
    deploy(server, tmp_path / "geo", name, psycopg_url(database))
    keys = zipf_keys(8000, seed=7)  # the best possible hit rate here: 1 - 688/8000 = 91%
    answers = run_load(server.url, name, keys)
    for key, answer in zip([k for i in range(16) for k in keys[i::16]], answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"cell": key, "region": expected(key)}
    counts = query_counts(database)
    assert counts and max(counts.values()) == 1, {k: v for k, v in counts.items() if v > 1}
    assert set(counts) == set(keys)  # each distinct key was queried, exactly once
    hit_rate = 1 - sum(counts.values()) / len(keys)
    assert hit_rate >= 0.9, hit_rate
    pids = {i["pid"] for i in server.instances(name)}
    assert len(pids) >= 2  # the single flight held across processes
    hits, misses = metric(server, name, "hit"), metric(server, name, "miss")
    assert hits + misses == len(keys) and misses == sum(counts.values())
    assert "coldbrew_feature_db_seconds_count" in server.client.get("/metrics").text


def test_outage_mid_load_gives_the_stable_error_or_the_default(
    server: Server, database: str, tmp_path: Path
) -> None:
    url = httpx.URL(psycopg_url(database))
    proxy = Proxy((url.host, url.port or 5432))
    proxied = str(url.copy_with(host="127.0.0.1", port=proxy.port))
    plain, kind = f"out-{uuid.uuid4().hex[:8]}", f"dflt-{uuid.uuid4().hex[:8]}"
    try:
        deploy(server, tmp_path / "a", plain, proxied, cache="redis", timeout_ms=300)
        default = 'default = { region = "unknown", elevation = 0 }'
        deploy(server, tmp_path / "b", kind, proxied, cache="local", timeout_ms=300, extra=default)
        fallback = {"region": "unknown", "elevation": 0}
        warm = [f"c{i:04d}" for i in range(20)]
        for name in (plain, kind):
            assert all(r.status_code == 200 for r in run_load(server.url, name, warm, 4))
        proxy.silent.set()  # the database stops answering, connections stay open
        keys = warm + [f"c{i:04d}" for i in range(100, 140)]
        for name in (plain, kind):
            started = time.monotonic()
            answers = run_load(server.url, name, keys, 8)
            elapsed = time.monotonic() - started
            assert elapsed < 20, elapsed  # 60 lookups of 300 ms at most each, 8 at a time
            for key, answer in zip([k for i in range(8) for k in keys[i::8]], answers, strict=True):
                if key in warm and name == plain:  # in Redis before the outage: as usual
                    assert answer.status_code == 200
                    assert answer.json()["region"] == expected(key)
                elif key in warm:  # a local cache: warm in the instance that looked it up
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["region"] in (expected(key), fallback)
                elif name == kind:
                    assert answer.status_code == 200, answer.text
                    assert answer.json()["region"] == fallback
                else:
                    assert answer.status_code == 503, answer.text
                    assert answer.json()["error"]["code"] == "FEATURES_UNAVAILABLE"
        assert metric(server, plain, "error") >= 40
    finally:
        proxy.close()
