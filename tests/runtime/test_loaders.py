"""Model loaders against the libraries that wrote the models, and the built-in model handler's
answers to bad input. Models are tiny and trained on scikit-learn's bundled datasets."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import joblib
import numpy as np
import pytest
import skops.io
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from coldbrew import errors
from coldbrew.runtime.loaders import LoadedModel, ModelLoadError, load_model
from coldbrew.runtime.model_handler import handler, predict_rows

IRIS = load_iris()
CANCER = load_breast_cancer()
DIABETES = load_diabetes()


def _check_plain(value: Any) -> None:
    """Results must be JSON-able as they are: json.dumps fails on numpy scalars."""
    json.dumps(value)


def _assert_classifier(
    loaded: LoadedModel,
    x: np.ndarray,
    labels: np.ndarray,
    proba: np.ndarray,
    classes: list[Any] | None,
    atol: float = 1e-6,
) -> None:
    out = loaded.predict(x)
    _check_plain(out)
    assert out["predictions"] == labels.tolist()
    np.testing.assert_allclose(out["probabilities"], proba, atol=atol)
    if classes is not None:
        assert out["classes"] == classes


# --------------------------------------------------------------------------- sklearn API


def test_joblib_sklearn_classifier(tmp_path: Path) -> None:
    model = RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=-1)
    model.fit(IRIS.data, IRIS.target)
    joblib.dump(model, tmp_path / "m.joblib")
    loaded = load_model(tmp_path / "m.joblib", "joblib")
    assert loaded.format == "joblib" and loaded.n_features == 4
    # n_jobs=-1 would start a thread pool per prediction inside every instance.
    assert loaded.estimator.n_jobs == 1  # type: ignore[attr-defined]
    _assert_classifier(
        loaded, IRIS.data, model.predict(IRIS.data), model.predict_proba(IRIS.data), [0, 1, 2]
    )


def test_pickle_sklearn_pipeline_with_string_labels(tmp_path: Path) -> None:
    labels = IRIS.target_names[IRIS.target]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(IRIS.data, labels)
    with open(tmp_path / "m.pkl", "wb") as f:
        pickle.dump(model, f)
    loaded = load_model(tmp_path / "m.pkl", "pickle")
    _assert_classifier(
        loaded,
        IRIS.data,
        model.predict(IRIS.data),
        model.predict_proba(IRIS.data),
        ["setosa", "versicolor", "virginica"],
    )


def test_joblib_sklearn_regressor_has_no_probabilities(tmp_path: Path) -> None:
    model = Ridge().fit(DIABETES.data, DIABETES.target)
    joblib.dump(model, tmp_path / "m.joblib")
    out = load_model(tmp_path / "m.joblib", "joblib").predict(DIABETES.data[:5])
    _check_plain(out)
    assert set(out) == {"predictions"}
    np.testing.assert_allclose(out["predictions"], model.predict(DIABETES.data[:5]))


def test_joblib_xgbclassifier(tmp_path: Path) -> None:
    model = xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=2).fit(IRIS.data, IRIS.target)
    joblib.dump(model, tmp_path / "m.joblib")
    loaded = load_model(tmp_path / "m.joblib", "joblib")
    assert loaded.n_features == 4
    _assert_classifier(
        loaded,
        IRIS.data,
        model.predict(IRIS.data),
        model.predict_proba(IRIS.data),
        [0, 1, 2],
        atol=1e-6,
    )


def test_skops(tmp_path: Path) -> None:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(
        CANCER.data, CANCER.target
    )
    skops.io.dump(model, tmp_path / "m.skops")
    loaded = load_model(tmp_path / "m.skops", "skops")
    assert loaded.n_features == 30
    _assert_classifier(
        loaded, CANCER.data, model.predict(CANCER.data), model.predict_proba(CANCER.data), [0, 1]
    )


# --------------------------------------------------------------------------- ONNX


@pytest.mark.parametrize("zipmap", [True, False])
def test_onnx_classifier(tmp_path: Path, zipmap: bool) -> None:
    x = IRIS.data.astype(np.float32)
    # String labels under ZipMap (classes come from the dict keys), integers without it
    # (classes come from the classifier node's attributes).
    y = IRIS.target_names[IRIS.target] if zipmap else IRIS.target
    clf = LogisticRegression(max_iter=500).fit(x, y)
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": zipmap}}, target_opset=17)
    (tmp_path / "m.onnx").write_bytes(onx.SerializeToString())
    loaded = load_model(tmp_path / "m.onnx", "onnx")
    assert loaded.n_features == 4
    # float64 input: the loader must cast to the graph's float32.
    _assert_classifier(
        loaded,
        IRIS.data,
        clf.predict(x),
        clf.predict_proba(x),
        clf.classes_.tolist(),
        atol=1e-4,
    )


def test_onnx_regressor(tmp_path: Path) -> None:
    x = DIABETES.data.astype(np.float32)
    model = LinearRegression().fit(x, DIABETES.target)
    (tmp_path / "m.onnx").write_bytes(to_onnx(model, x[:1]).SerializeToString())
    loaded = load_model(tmp_path / "m.onnx", "onnx")
    out = loaded.predict(DIABETES.data)
    _check_plain(out)
    assert set(out) == {"predictions"}
    assert len(out["predictions"]) == len(x)  # one value per row, not [[v], ...]
    np.testing.assert_allclose(out["predictions"], model.predict(x), rtol=1e-4)


# --------------------------------------------------------------------------- XGBoost Booster


def _train_booster(x: np.ndarray, y: np.ndarray, **params: Any) -> xgb.Booster:
    params = {"max_depth": 3, "nthread": 1, "seed": 0, **params}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=8)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_binary(tmp_path: Path, suffix: str) -> None:
    booster = _train_booster(CANCER.data, CANCER.target, objective="binary:logistic")
    booster.save_model(tmp_path / f"m{suffix}")
    loaded = load_model(tmp_path / f"m{suffix}", "xgboost")
    assert loaded.n_features == 30
    p = booster.predict(xgb.DMatrix(CANCER.data))
    _assert_classifier(
        loaded, CANCER.data, (p >= 0.5).astype(int), np.column_stack([1 - p, p]), [0, 1]
    )


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
@pytest.mark.parametrize("objective", ["multi:softprob", "multi:softmax"])
def test_xgboost_multiclass(tmp_path: Path, suffix: str, objective: str) -> None:
    booster = _train_booster(IRIS.data, IRIS.target, objective=objective, num_class=3)
    booster.save_model(tmp_path / f"m{suffix}")
    loaded = load_model(tmp_path / f"m{suffix}", "xgboost")
    margins = booster.predict(xgb.DMatrix(IRIS.data), output_margin=True)
    proba = np.exp(margins) / np.exp(margins).sum(axis=1, keepdims=True)
    _assert_classifier(loaded, IRIS.data, proba.argmax(axis=1), proba, [0, 1, 2], atol=1e-5)
    if objective == "multi:softmax":
        labels = booster.predict(xgb.DMatrix(IRIS.data)).astype(int)
        assert loaded.predict(IRIS.data)["predictions"] == labels.tolist()


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_regression(tmp_path: Path, suffix: str) -> None:
    booster = _train_booster(DIABETES.data, DIABETES.target, objective="reg:squarederror")
    booster.save_model(tmp_path / f"m{suffix}")
    out = load_model(tmp_path / f"m{suffix}", "xgboost").predict(DIABETES.data)
    _check_plain(out)
    assert set(out) == {"predictions"}
    np.testing.assert_allclose(
        out["predictions"], booster.predict(xgb.DMatrix(DIABETES.data)), rtol=1e-5
    )


def test_xgboost_with_feature_names_takes_positional_rows(tmp_path: Path) -> None:
    names = [f"f_{i}" for i in range(30)]
    dtrain = xgb.DMatrix(CANCER.data, label=CANCER.target, feature_names=names)
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, dtrain, 4)
    booster.save_model(tmp_path / "m.json")
    out = load_model(tmp_path / "m.json", "xgboost").predict(CANCER.data[:3])
    assert len(out["predictions"]) == 3


# --------------------------------------------------------------------------- load errors


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [
        ("broken.joblib", "joblib"),
        ("broken.pkl", "pickle"),
        ("broken.skops", "skops"),
        ("broken.onnx", "onnx"),
        ("broken.json", "xgboost"),
        ("broken.ubj", "xgboost"),
    ],
)
def test_corrupt_file_raises_model_load_error(tmp_path: Path, filename: str, fmt: str) -> None:
    (tmp_path / filename).write_bytes(b"\x00\x01 this is not a model \xff" * 10)
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / filename, fmt)
    assert filename in info.value.message and fmt in info.value.message
    assert info.value.code == "MODEL_LOAD_ERROR"
    assert info.value.to_dict()["file"] == filename


def test_object_without_predict_is_refused(tmp_path: Path) -> None:
    joblib.dump({"weights": [1, 2, 3]}, tmp_path / "m.joblib")
    with pytest.raises(ModelLoadError, match=r"m\.joblib.*no predict\(\) method"):
        load_model(tmp_path / "m.joblib", "joblib")


def test_missing_file_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"nope\.onnx.*file not found"):
        load_model(tmp_path / "nope.onnx", "onnx")
    (tmp_path / "m.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown format 'tensorflow'"):
        load_model(tmp_path / "m.bin", "tensorflow")


# --------------------------------------------------------------------------- model handler


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModel]:
    """One model per loader family, all on breast-cancer data (30 features)."""
    folder = tmp_path_factory.mktemp("handler-models")
    x = CANCER.data.astype(np.float32)
    rf = RandomForestClassifier(n_estimators=5, random_state=0).fit(x, CANCER.target)
    joblib.dump(rf, folder / "m.joblib")
    (folder / "m.onnx").write_bytes(to_onnx(rf, x[:1]).SerializeToString())
    _train_booster(x, CANCER.target, objective="binary:logistic").save_model(folder / "m.json")
    return {
        "joblib": load_model(folder / "m.joblib", "joblib"),
        "onnx": load_model(folder / "m.onnx", "onnx"),
        "xgboost": load_model(folder / "m.json", "xgboost"),
    }


def _call(model: LoadedModel, event: Any) -> dict[str, Any]:
    return handler(event, SimpleNamespace(model=model, function_name="t", aws_request_id="r"))


ROW = CANCER.data[0].tolist()


@pytest.mark.parametrize("fmt", ["joblib", "onnx", "xgboost"])
@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_handler_predicts(models: dict[str, LoadedModel], fmt: str, key: str) -> None:
    out = _call(models[fmt], {key: [ROW, CANCER.data[1].tolist()]})
    assert "statusCode" not in out
    assert out["predictions"] == [0, 0]  # both rows are malignant
    assert len(out["probabilities"]) == 2 and out["classes"] == [0, 1]
    _check_plain(out)


BAD_EVENTS = [
    pytest.param({"rows": [ROW]}, "missing 'instances'", id="missing-key"),
    pytest.param([ROW], "must be a JSON object", id="event-not-object"),
    pytest.param({"instances": ROW}, "wrap a single row", id="flat-row"),
    pytest.param({"instances": []}, "non-empty list", id="empty"),
    pytest.param({"instances": "1,2,3"}, "non-empty list", id="string"),
    pytest.param({"instances": [ROW, ROW[:10]]}, "row 1 has 10 values", id="ragged"),
    pytest.param({"instances": [ROW, {"a": 1}]}, "row 1 must be a list", id="row-object"),
    pytest.param({"instances": [[*ROW[:29], "7"]]}, "column 29: expected a number", id="str"),
    pytest.param({"instances": [[*ROW[:29], None]]}, "got null", id="null"),
    pytest.param({"instances": [[*ROW[:29], True]]}, "got a boolean", id="bool"),
    pytest.param({"instances": [ROW[:29]]}, "expects 30 features per row, got 29", id="width"),
    pytest.param({"instances": [[]]}, "row 0 is empty", id="empty-row"),
]


@pytest.mark.parametrize("fmt", ["joblib", "onnx", "xgboost"])
@pytest.mark.parametrize(("event", "message"), BAD_EVENTS)
def test_handler_bad_input_is_400(
    models: dict[str, LoadedModel], fmt: str, event: Any, message: str
) -> None:
    out = _call(models[fmt], event)
    assert out["statusCode"] == 400
    assert out["headers"] == {"Content-Type": "application/json"}
    error = json.loads(out["body"])["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert message in error["message"]


def test_predict_rows_takes_arrays_and_raises_for_bad_ones(
    models: dict[str, LoadedModel],
) -> None:
    """The batcher's entry point: concatenated numpy rows in, one prediction call."""
    rows = CANCER.data[:4]
    assert len(predict_rows(models["joblib"], rows)["predictions"]) == 4
    for bad in (rows[0], rows[:, :5], rows.astype(str), np.zeros((0, 30))):
        with pytest.raises(errors.ValidationError):
            predict_rows(models["joblib"], bad)
