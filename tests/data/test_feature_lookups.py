"""Feature lookups without services: the cache, single flight, negative caching, defaults, the
key's JSON path; and the built-in model handler appending a feature column, end to end on a
real server with a SQLite feature database (any SQLAlchemy URL works)."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression

from coldbrew.cache import LocalCache
from coldbrew.runtime import features
from coldbrew.runtime.config import FeatureConfig, FunctionConfig
from support import Server


class FakeDatabase:
    """Stands in for ``features.Database``: a dict, a delay, and a switch for an outage."""

    def __init__(self, rows: dict[str, dict[str, Any]], delay_s: float = 0.0) -> None:
        self.rows = rows
        self.delay_s = delay_s
        self.down = False
        self.queries: list[Any] = []
        self._lock = threading.Lock()

    def query(self, sql: Any, params: dict[str, Any], timeout_s: float) -> dict[str, Any] | None:
        with self._lock:
            self.queries.append(params["cell"])
        if self.down:
            raise features.FeaturesUnavailable("the database failed: OperationalError")
        time.sleep(self.delay_s)
        return self.rows.get(params["cell"])


def lookup(db: FakeDatabase, **spec: Any) -> features.Lookup:
    config = FeatureConfig(
        name="region",
        sql="select region from regions where cell = :cell",
        key="$.location.cell",
        database="DB_URL",
        **spec,
    )
    made = features.Lookup(config, "coldbrew:features:test", LocalCache(), db)  # type: ignore[arg-type]
    made.prepare()
    return made


def event(cell: Any) -> dict[str, Any]:
    return {"location": {"cell": cell}}


def test_concurrent_misses_of_one_key_make_one_query() -> None:
    db = FakeDatabase({"a": {"region": "north"}}, delay_s=0.05)
    found = lookup(db)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(found.get(event("a")))) for _ in range(32)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert db.queries == ["a"]
    assert [value for value, _ in results] == [{"region": "north"}] * 32
    outcomes = sorted(stat.outcome for _, stat in results)
    assert outcomes.count("miss") == 1 and outcomes.count("hit") == 31


def test_missing_rows_are_remembered_and_expire() -> None:
    db = FakeDatabase({}, delay_s=0)
    found = lookup(db, cache_ttl_s=60, negative_ttl_s=0.2)
    assert found.get(event("nowhere"))[0] is None
    assert found.get(event("nowhere"))[1].outcome == "hit"
    assert db.queries == ["nowhere"]
    time.sleep(0.25)
    found.get(event("nowhere"))
    assert db.queries == ["nowhere", "nowhere"]


def test_outage_gives_the_default_or_the_stable_error() -> None:
    db = FakeDatabase({"a": {"region": "north"}})
    db.down = True
    with pytest.raises(features.FeaturesUnavailable) as raised:
        lookup(db).get(event("a"))
    assert raised.value.code == "FEATURES_UNAVAILABLE"
    value, stat = lookup(db, default={"region": "?"}).get(event("a"))
    assert value == {"region": "?"} and stat.outcome == "error"
    # A declared default of null is a default too.
    assert lookup(db, default=None).get(event("a"))[0] is None


def test_the_key_comes_from_the_event() -> None:
    db = FakeDatabase({"7": {"region": "x"}, "b": {"region": "y"}})
    with pytest.raises(features.FeatureKeyMissing) as raised:
        lookup(db).get({"location": {}})
    assert raised.value.code == "VALIDATION_ERROR"
    assert lookup(db, default="d").get({"location": {}})[0] == "d"
    assert db.queries == []
    for path, doc, want in (
        ("$.a.b", {"a": {"b": 1}}, 1),
        ("$.a[1]", {"a": [5, 6]}, 6),
        ("$['odd key'].x", {"odd key": {"x": "y"}}, "y"),
        ("$.a.b", {"a": {}}, features._ABSENT),
        ("$.a", {"a": {"nested": 1}}, features._ABSENT),
    ):
        assert features.value_at(doc, features.parse_path(path)) == want


def test_sql_must_have_one_parameter() -> None:
    db = FakeDatabase({})
    config = FeatureConfig(
        name="f", sql="select 1 where a = :a and b = :b", key="$.a", database="DB_URL"
    )
    with pytest.raises(ValueError, match="exactly one named parameter"):
        features.Lookup(config, "p", None, db).prepare()  # type: ignore[arg-type]


def test_local_cache_expiry_and_bound() -> None:
    cache = LocalCache(max_entries=2)
    cache.set("a", b"1", 60)
    cache.set("b", b"2", 0.05)
    assert cache.get("a") == b"1"  # now the most recently used
    cache.set("c", b"3", 60)  # evicts b, the least recently used
    assert cache.get("b") is None and cache.get("a") == b"1" and cache.get("c") == b"3"
    cache.set("d", b"4", 0.01)
    time.sleep(0.02)
    assert cache.get("d") is None


# --- the built-in model handler with a feature column, live ---------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("features-sqlite"))
    running.start()
    yield running
    running.stop()


def test_builtin_model_handler_appends_declared_columns(server: Server, tmp_path: Path) -> None:
    # y = x + 10 * elevation; elevation comes from the database, by the event's cell.
    x = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 3.0], [5.0, 1.0]])
    model = LinearRegression().fit(x, x[:, 0] + 10 * x[:, 1])
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    joblib.dump(model, bundle / "model.joblib")
    db_path = tmp_path / "features.db"  # readable by the function's uid: tmp_path is traversable
    with sqlite3.connect(db_path) as conn:
        conn.execute("create table cells (cell text primary key, elevation real)")
        conn.execute("insert into cells values ('high', 3.0), ('low', 0.5)")
    db_path.chmod(0o644)
    tmp_path.chmod(0o711)  # the function's uid opens it (isolation on as root)
    (bundle / "coldbrew.toml").write_text(
        f"""
model = "model.joblib"
trust_pickle = true

[environment]
FEATURE_DB = "sqlite:///{db_path}"

[[features]]
name = "terrain"
sql = "select elevation from cells where cell = :cell"
key = "$.cell"
database = "FEATURE_DB"
columns = ["elevation"]
"""
    )
    answer = server.deploy_folder("terrain", bundle)
    assert answer.status_code == 201, answer.text
    got = server.invoke("terrain", {"cell": "high", "instances": [[1.0], [2.0]]})
    assert got.status_code == 200, got.text
    assert np.allclose(got.json()["predictions"], [31.0, 32.0])
    missing = server.invoke("terrain", {"cell": "nowhere", "instances": [[1.0]]})
    assert missing.status_code == 503, missing.text
    assert missing.json()["error"]["code"] == "FEATURES_UNAVAILABLE"
    no_key = server.invoke("terrain", {"instances": [[1.0]]})
    assert no_key.status_code == 400 and no_key.json()["error"]["code"] == "VALIDATION_ERROR"


def _sqlite_features(tmp_path: Path) -> str:
    path = tmp_path / "f.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table cells (cell text primary key, elevation real)")
        conn.execute("insert into cells values ('high', 3.0)")
    return f"sqlite:///{path}"


def test_key_fn_and_a_real_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keys.py").write_text("def cell(event):\n    return event['where'].lower()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FEATURE_DB", _sqlite_features(tmp_path))
    config = FunctionConfig.model_validate(
        {
            "environment": {"FEATURE_DB": "x"},
            "features": [
                {
                    "name": "terrain",
                    "sql": "select elevation from cells where cell = :cell",
                    "key_fn": "keys:cell",
                    "database": "FEATURE_DB",
                }
            ],
        }
    )
    lookups = features.load(config, "fn")
    assert lookups is not None
    values, stats = lookups.resolve({"where": "HIGH"})
    assert values == {"terrain": {"elevation": 3.0}} and stats[0].outcome == "miss"
    assert lookups.resolve({"where": "High"})[1][0].outcome == "hit"


def test_a_fork_opens_its_own_connections(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_DB", _sqlite_features(tmp_path))
    config = FunctionConfig.model_validate(
        {
            "environment": {"FEATURE_DB": "x"},
            "features": [
                {
                    "name": "terrain",
                    "sql": "select elevation from cells where cell = :cell",
                    "key": "$.cell",
                    "database": "FEATURE_DB",
                }
            ],
        }
    )
    lookups = features.load(config, "fn")
    assert lookups is not None
    lookups.resolve({"cell": "high"})  # the parent's engine, pool, worker thread and cache
    parent_db = lookups.lookups[0].db
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's is reused, and lookups still work
        ok = not lookups._started and lookups.lookups[0].cache is not None
        values, stats = lookups.resolve({"cell": "high"})
        ok = ok and lookups.lookups[0].db is not parent_db and stats[0].outcome == "miss"
        os._exit(0 if ok and values["terrain"] == {"elevation": 3.0} else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
