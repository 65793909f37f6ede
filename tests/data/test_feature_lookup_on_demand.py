"""``context.features.lookup(name, key)``: a declared feature without a key in the event, looked
up by the handler for a key it computed (the licence-plate example's plate read from a frame),
through the same cache, single flight, timeout and default as a lookup before the handler.
In process, on a real SQLite database (any SQLAlchemy URL works)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from coldbrew.runtime import features
from coldbrew.runtime.config import FunctionConfig


def _config(url_var: str = "STOLEN_DB", **extra: Any) -> FunctionConfig:
    return FunctionConfig.model_validate(
        {
            "environment": {url_var: "x"},
            "features": [
                {
                    "name": "stolen",
                    "sql": "select make, colour from stolen where plate = :plate",
                    "database": url_var,  # no key, no key_fn: only the handler looks it up
                    **extra,
                }
            ],
        }
    )


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "stolen.db"
    with sqlite3.connect(path) as conn:
        conn.execute("create table stolen (plate text primary key, make text, colour text)")
        conn.execute("insert into stolen values ('7ABC123', 'Toyota', 'red')")
    monkeypatch.setenv("STOLEN_DB", f"sqlite:///{path}")
    return path


def _bound(config: FunctionConfig) -> features.Features:
    lookups = features.load(config, "plates")
    assert lookups is not None
    values, stats = lookups.resolve({"image": "..."})  # before the handler: nothing to do
    assert values == {} and stats == []
    return lookups.bind(values, stats)


def test_the_handler_looks_up_a_key_it_computed(database: Path) -> None:
    found = _bound(_config())
    assert found.lookup("stolen", "7ABC123") == {"make": "Toyota", "colour": "red"}
    assert found.lookup("stolen", "7ABC123") == {"make": "Toyota", "colour": "red"}
    assert found.lookup("stolen", "1XYZ999") is None  # no row
    # The stats go out with the invocation's result, so /metrics counts these lookups.
    assert [s.outcome for s in found.stats] == ["miss", "hit", "miss"]
    assert found._lookups.lookups[0].db.queries == 2  # the second read came from the cache
    with pytest.raises(KeyError, match="no \\[\\[features\\]\\] named 'stolen_cars'"):
        found.lookup("stolen_cars", "7ABC123")


def test_concurrent_lookups_of_one_key_make_one_query(database: Path) -> None:
    found = _bound(_config())
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(found.lookup("stolen", "7ABC123")))
        for _ in range(16)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [{"make": "Toyota", "colour": "red"}] * 16
    assert found._lookups.lookups[0].db.queries == 1


def test_an_outage_gives_the_default_or_the_stable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STOLEN_DB", f"sqlite:///{tmp_path}/no/such/dir/stolen.db")
    with pytest.raises(features.FeaturesUnavailable) as failed:
        _bound(_config()).lookup("stolen", "7ABC123")
    assert failed.value.code == "FEATURES_UNAVAILABLE"
    found = _bound(_config(default={"make": None}))
    assert found.lookup("stolen", "7ABC123") == {"make": None}
    assert [s.outcome for s in found.stats] == ["error"]
    with pytest.raises(features.FeatureKeyMissing):
        _bound(_config()).lookup("stolen", None)


def test_key_and_key_fn_together_are_refused() -> None:
    with pytest.raises(ValidationError, match="has both key and key_fn"):
        _config(key="$.plate", key_fn="keys:plate")
