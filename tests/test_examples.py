"""The bundled examples build offline, load with the runtime's loaders, and answer their sample
events; the water-quality bundle behaves as the Lambda handler it claims to be."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest

from coldbrew.examples import Example, build_examples, examples_root
from coldbrew.runtime.config import config_for_model_file, load_config
from coldbrew.runtime.loaders import load_model
from coldbrew.runtime.model_handler import handler as model_handler


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Example]:
    return {ex.name: ex for ex in build_examples(tmp_path_factory.mktemp("examples"))}


@pytest.fixture(scope="module")
def water(built: dict[str, Example]) -> ModuleType:
    """The bundle's handler.py imported by path, as the runtime (or Lambda) would."""
    path = built["water-quality"].path / "handler.py"
    spec = importlib.util.spec_from_file_location("water_quality_handler_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _context() -> SimpleNamespace:
    return SimpleNamespace(
        function_name="water-quality",
        function_version="1",
        memory_limit_in_mb=256,
        aws_request_id="req-1",
        get_remaining_time_in_millis=lambda: 10_000,
    )


def test_examples_root_is_the_repo_folder_in_a_checkout() -> None:
    root = examples_root()
    assert (root / "breast_cancer_rf" / "train.py").is_file()


def test_build_gives_deployable_artifacts(built: dict[str, Example]) -> None:
    assert sorted(built) == ["breast-cancer", "digits", "water-quality"]
    assert built["breast-cancer"].path.name == "model.joblib"
    assert built["digits"].path.name == "model.onnx"
    bundle = built["water-quality"].path
    assert bundle.is_dir() and (bundle / "model.json").is_file()
    for example in built.values():
        assert example.description and example.path.exists()
        json.dumps(example.sample_event)  # events are sent as JSON


@pytest.mark.parametrize(("name", "expected"), [("breast-cancer", 0), ("digits", 0)])
def test_bare_models_predict_their_sample_event(
    built: dict[str, Example], name: str, expected: int
) -> None:
    """The sample rows are the first rows of the datasets: a malignant tumour, a zero."""
    example = built[name]
    config = config_for_model_file(example.path.name)
    model = load_model(example.path, config.resolved_model_format() or "")
    out = model_handler(example.sample_event, SimpleNamespace(model=model))
    assert out["predictions"] == [expected]
    assert max(out["probabilities"][0]) > 0.9


def test_water_quality_bundle_config_and_model(built: dict[str, Example]) -> None:
    bundle = built["water-quality"].path
    config = load_config(bundle)
    assert (config.handler, config.model, config.memory_mb, config.timeout_s) == (
        "handler:handler",
        "model.json",
        256,
        10,
    )
    # The runtime also loads the declared model for context.model; it must be a valid Booster.
    model = load_model(bundle / "model.json", config.resolved_model_format() or "")
    assert model.n_features == 9


def test_water_quality_handler_needs_no_coldbrew(built: dict[str, Example]) -> None:
    """It must run unchanged on AWS Lambda."""
    tree = ast.parse((built["water-quality"].path / "handler.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert "coldbrew" not in imported


def _call(water: ModuleType, event: Any) -> tuple[int, dict[str, Any]]:
    response = water.handler(event, _context())
    assert response["headers"] == {"Content-Type": "application/json"}
    return response["statusCode"], json.loads(response["body"])


def test_water_quality_sample_event(water: ModuleType, built: dict[str, Example]) -> None:
    status, body = _call(water, built["water-quality"].sample_event)
    assert status == 200
    [result] = body["results"]
    assert isinstance(result["potable"], bool)
    assert 0.0 <= result["probability"] <= 1.0
    assert result["potable"] == (result["probability"] >= 0.5)


def test_water_quality_learns_the_rule(water: ModuleType, built: dict[str, Example]) -> None:
    train = _import(built["water-quality"].path / "train.py")
    x, y = train.make_dataset(n=300, seed=123)  # unseen samples
    readings = [dict(zip(water.FEATURES, row, strict=True)) for row in x.tolist()]
    status, body = _call(water, {"readings": readings})
    assert status == 200
    predicted = np.array([r["potable"] for r in body["results"]])
    assert (predicted == y.astype(bool)).mean() > 0.85  # 5% label noise caps it near 0.95


def test_water_quality_single_reading_and_proxy_event(
    water: ModuleType, built: dict[str, Example]
) -> None:
    reading = built["water-quality"].sample_event["readings"][0]
    assert _call(water, reading)[0] == 200
    status, body = _call(water, {"body": json.dumps({"readings": [reading, reading]})})
    assert status == 200 and len(body["results"]) == 2


def _reading(water: ModuleType, **changes: Any) -> dict[str, Any]:
    reading = dict.fromkeys(water.FEATURES, 1.0)
    reading.update(changes)
    return {k: v for k, v in reading.items() if v is not ...}


@pytest.mark.parametrize(
    ("event_of", "message"),
    [
        (lambda w: _reading(w, ph=..., turbidity=...), "missing field(s): ph, turbidity"),
        (lambda w: _reading(w, sulfate="high"), "non-numeric field(s): sulfate"),
        (lambda w: _reading(w, ph=None), "non-numeric field(s): ph"),
        (lambda w: _reading(w, ph=True), "non-numeric field(s): ph"),
        (
            lambda w: {"readings": [_reading(w), _reading(w, solids=...)]},
            "missing field(s): solids in reading 1",
        ),
        (lambda w: {"readings": []}, "non-empty list"),
        (lambda w: {"readings": [7]}, "must be an object"),
        (lambda w: ["not", "an", "object"], "single reading object"),
        (lambda w: {"body": "{not json"}, "not valid JSON"),
    ],
)
def test_water_quality_bad_input_is_400(water: ModuleType, event_of: Any, message: str) -> None:
    status, body = _call(water, event_of(water))
    assert status == 400
    assert body["error"]["code"] == "VALIDATION_ERROR"
    assert message in body["error"]["message"]


def test_water_quality_inference_failure_is_500(
    water: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    class BrokenBooster:
        def inplace_predict(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("device on fire")

    monkeypatch.setattr(water, "BOOSTER", BrokenBooster())
    status, body = _call(water, _reading(water))
    assert status == 500
    assert body["error"]["code"] == "INFERENCE_ERROR"
    assert "device on fire" in body["error"]["message"]


def test_build_leaves_the_source_folder_untouched(built: dict[str, Example]) -> None:
    for example in built.values():
        assert examples_root() not in example.path.parents


def _import(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_train", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
