"""Model loaders against the libraries that wrote the models, and the built-in model handler's
answers to bad input. Models are tiny and trained on scikit-learn's bundled datasets."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
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


# --------------------------------------------------------------------------- PyTorch


def _torch_net(out: int, last: str | None) -> Any:
    import torch

    torch.manual_seed(0)
    layers: list[Any] = [torch.nn.Linear(30, 8), torch.nn.ReLU(), torch.nn.Linear(8, out)]
    if last == "softmax":
        layers.append(torch.nn.Softmax(dim=1))
    elif last == "sigmoid":
        layers.append(torch.nn.Sigmoid())
    return torch.nn.Sequential(*layers).eval()


def _torch_reference(net: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(x.astype(np.float32))).numpy().astype(np.float64)


def _save_torch(net: Any, path: Path, fmt: str, meta: dict[str, Any] | None = None) -> None:
    import torch

    extra = {"coldbrew.json": json.dumps(meta)} if meta else {}
    if fmt == "torchscript":
        torch.jit.script(net).save(str(path), _extra_files=extra)
    else:
        batch = torch.export.Dim("batch")
        program = torch.export.export(
            net, (torch.zeros(4, 30),), dynamic_shapes={"input": {0: batch}}
        )
        torch.export.save(program, str(path), extra_files=extra)


TORCH_FORMATS = [("torchscript", ".pt"), ("torch_export", ".pt2")]


@pytest.mark.parametrize(("fmt", "suffix"), TORCH_FORMATS)
def test_torch_softmax_classifier(tmp_path: Path, fmt: str, suffix: str) -> None:
    net = _torch_net(2, "softmax")
    _save_torch(net, tmp_path / f"m{suffix}", fmt)
    loaded = load_model(tmp_path / f"m{suffix}", fmt)
    assert loaded.format == fmt and loaded.n_features == 30
    proba = _torch_reference(net, CANCER.data)
    _assert_classifier(loaded, CANCER.data, proba.argmax(axis=1), proba, [0, 1], atol=1e-6)


@pytest.mark.parametrize(("fmt", "suffix"), TORCH_FORMATS)
def test_torch_logits_with_metadata_classes(tmp_path: Path, fmt: str, suffix: str) -> None:
    net = _torch_net(3, None)
    meta = {"outputs": "logits", "classes": ["a", "b", "c"]}
    _save_torch(net, tmp_path / f"m{suffix}", fmt, meta)
    loaded = load_model(tmp_path / f"m{suffix}", fmt)
    logits = _torch_reference(net, CANCER.data[:50])
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array(["a", "b", "c"])[proba.argmax(axis=1)]
    _assert_classifier(loaded, CANCER.data[:50], labels, proba, ["a", "b", "c"], atol=1e-5)


@pytest.mark.parametrize(("fmt", "suffix"), TORCH_FORMATS)
def test_torch_single_sigmoid_is_binary_and_regression_is_values(
    tmp_path: Path, fmt: str, suffix: str
) -> None:
    binary = _torch_net(1, "sigmoid")
    _save_torch(binary, tmp_path / f"b{suffix}", fmt)
    p = _torch_reference(binary, CANCER.data).ravel()
    loaded = load_model(tmp_path / f"b{suffix}", fmt)
    _assert_classifier(
        loaded, CANCER.data, (p >= 0.5).astype(int), np.column_stack([1 - p, p]), [0, 1]
    )
    regressor = _torch_net(1, None)
    _save_torch(regressor, tmp_path / f"r{suffix}", fmt)
    out = load_model(tmp_path / f"r{suffix}", fmt).predict(CANCER.data[:7])
    _check_plain(out)
    assert set(out) == {"predictions"} and len(out["predictions"]) == 7
    np.testing.assert_allclose(
        out["predictions"], _torch_reference(regressor, CANCER.data[:7]).ravel(), rtol=1e-6
    )


def test_torch_export_with_a_fixed_batch_takes_any_row_count(tmp_path: Path) -> None:
    import torch

    net = _torch_net(2, "softmax")
    torch.export.save(torch.export.export(net, (torch.zeros(4, 30),)), str(tmp_path / "m.pt2"))
    loaded = load_model(tmp_path / "m.pt2", "torch_export")
    proba = _torch_reference(net, CANCER.data[:7])  # 7 rows: two chunks of 4, one padded
    _assert_classifier(loaded, CANCER.data[:7], proba.argmax(axis=1), proba, [0, 1])


def test_torch_threads_wait_for_the_instance(tmp_path: Path) -> None:
    """Loading holds torch to one thread; only ``enter_instance`` (after the fork) applies
    ``threads``. Run in a fresh interpreter: torch's thread settings are per process."""
    net = _torch_net(2, "softmax")
    _save_torch(net, tmp_path / "m.pt", "torchscript")
    script = textwrap.dedent(
        f"""
        import os, numpy as np, torch
        from coldbrew.runtime.loaders import load_model, enter_instance
        imported = len(os.listdir("/proc/self/task"))
        model = load_model({str(tmp_path / "m.pt")!r}, "torchscript", threads=2)
        model.predict(np.zeros((64, 30)))
        before = (torch.get_num_threads(), len(os.listdir("/proc/self/task")) - imported)
        enter_instance(model)
        print(before, torch.get_num_threads(), torch.get_num_interop_threads())
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["(1,", "0)", "2", "1"]


def test_torch_model_returning_a_tuple_is_a_clear_error(tmp_path: Path) -> None:
    import torch

    class Pair(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x, x

    torch.jit.script(Pair()).save(str(tmp_path / "m.pt"))
    with pytest.raises(TypeError, match="returned a tuple"):
        load_model(tmp_path / "m.pt", "torchscript").predict(CANCER.data[:2])


# --------------------------------------------------------------------------- LightGBM


def _lgb_booster(x: np.ndarray, y: np.ndarray, **params: Any) -> Any:
    import lightgbm as lgb

    params = {"num_threads": 1, "verbose": -1, "seed": 0, **params}
    return lgb.train(params, lgb.Dataset(x, label=y), num_boost_round=8)


@pytest.mark.parametrize("suffix", [".txt", ".lgb"])
def test_lightgbm_binary(tmp_path: Path, suffix: str) -> None:
    booster = _lgb_booster(CANCER.data, CANCER.target, objective="binary")
    booster.save_model(str(tmp_path / f"m{suffix}"))
    loaded = load_model(tmp_path / f"m{suffix}", "lightgbm")
    assert loaded.format == "lightgbm" and loaded.n_features == 30
    p = booster.predict(CANCER.data)
    _assert_classifier(
        loaded, CANCER.data, (p >= 0.5).astype(int), np.column_stack([1 - p, p]), [0, 1]
    )


def test_lightgbm_multiclass_and_regression(tmp_path: Path) -> None:
    multi = _lgb_booster(IRIS.data, IRIS.target, objective="multiclass", num_class=3)
    multi.save_model(str(tmp_path / "multi.txt"))
    proba = multi.predict(IRIS.data)
    loaded = load_model(tmp_path / "multi.txt", "lightgbm")
    _assert_classifier(loaded, IRIS.data, proba.argmax(axis=1), proba, [0, 1, 2])
    reg = _lgb_booster(DIABETES.data, DIABETES.target, objective="regression")
    reg.save_model(str(tmp_path / "reg.txt"))
    out = load_model(tmp_path / "reg.txt", "lightgbm").predict(DIABETES.data)
    _check_plain(out)
    assert set(out) == {"predictions"}
    np.testing.assert_allclose(out["predictions"], reg.predict(DIABETES.data), rtol=1e-9)


def test_lightgbm_sklearn_estimator_via_joblib(tmp_path: Path) -> None:
    import lightgbm as lgb

    model = lgb.LGBMClassifier(n_estimators=8, verbose=-1, n_jobs=-1).fit(IRIS.data, IRIS.target)
    joblib.dump(model, tmp_path / "m.joblib")
    loaded = load_model(tmp_path / "m.joblib", "joblib")
    assert loaded.n_features == 4
    assert loaded.estimator.n_jobs == 1  # type: ignore[attr-defined]
    _assert_classifier(
        loaded, IRIS.data, model.predict(IRIS.data), model.predict_proba(IRIS.data), [0, 1, 2]
    )


@pytest.mark.parametrize(
    ("filename", "fmt"),
    [("broken.pt", "torchscript"), ("broken.pt2", "torch_export"), ("broken.txt", "lightgbm")],
)
def test_corrupt_torch_and_lightgbm_files(tmp_path: Path, filename: str, fmt: str) -> None:
    (tmp_path / filename).write_bytes(b"\x00\x01 this is not a model \xff" * 10)
    with pytest.raises(ModelLoadError) as info:
        load_model(tmp_path / filename, fmt)
    assert filename in info.value.message and fmt in info.value.message


@pytest.fixture(scope="module")
def torch_and_lightgbm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("torch-lgb-models")
    _save_torch(_torch_net(2, "softmax"), folder / "m.pt", "torchscript")
    _save_torch(_torch_net(2, "softmax"), folder / "m.pt2", "torch_export")
    _lgb_booster(CANCER.data, CANCER.target, objective="binary").save_model(str(folder / "m.txt"))
    return {
        "torchscript": load_model(folder / "m.pt", "torchscript"),
        "torch_export": load_model(folder / "m.pt2", "torch_export"),
        "lightgbm": load_model(folder / "m.txt", "lightgbm"),
    }


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export", "lightgbm"])
def test_handler_contract_and_batching_for_torch_and_lightgbm(
    torch_and_lightgbm_models: dict[str, Any], fmt: str
) -> None:
    from coldbrew.runtime.model_handler import batch_handler

    model = torch_and_lightgbm_models[fmt]
    rows = CANCER.data[:5].tolist()
    single = _call(model, {"instances": rows})
    assert set(single) == {"predictions", "probabilities", "classes"}
    _check_plain(single)
    bad = _call(model, {"instances": [ROW[:29]]})
    assert bad["statusCode"] == 400 and "expects 30 features" in bad["body"]
    # Three callers in one model call: each gets exactly its own rows' answers.
    context = SimpleNamespace(model=model)
    events = [{"instances": rows[:2]}, {"instances": [ROW[:3]]}, {"instances": rows[2:]}]
    out = batch_handler(events, [context] * 3)
    assert out[1]["statusCode"] == 400
    assert out[0]["predictions"] + out[2]["predictions"] == single["predictions"]
    np.testing.assert_allclose(
        out[0]["probabilities"] + out[2]["probabilities"], single["probabilities"], atol=1e-6
    )


def test_a_missing_optional_library_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coldbrew.runtime import loaders

    def without_torch(path: Path, fmt: str, threads: int) -> Any:
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setitem(loaders.LOADERS, "torchscript", without_torch)
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"torch is not installed.*coldbrew\[torch\]"):
        load_model(tmp_path / "m.pt", "torchscript")
