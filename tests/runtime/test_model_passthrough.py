"""``context.model``: coldbrew's ``predict`` shape, plus the library's own object and API."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import xgboost as xgb
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression

from coldbrew.runtime.loaders import load_model

IRIS = load_iris()


def test_sklearn_predict_proba_and_attributes_pass_through(tmp_path: Path) -> None:
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(IRIS.data, IRIS.target)
    joblib.dump(forest, tmp_path / "rf.joblib")
    model = load_model(tmp_path / "rf.joblib", "joblib")
    rows = IRIS.data[[0, 75]]
    assert model.predict(rows)["predictions"] == forest.predict(rows).tolist()  # coldbrew's
    assert type(model.raw) is RandomForestClassifier
    np.testing.assert_array_equal(model.predict_proba(rows), forest.predict_proba(rows))
    np.testing.assert_array_equal(model.classes_, forest.classes_)
    assert model.feature_importances_.shape == (4,)
    assert model.raw.predict(rows).tolist() == forest.predict(rows).tolist()


def test_no_predict_proba_where_the_estimator_has_none(tmp_path: Path) -> None:
    joblib.dump(LinearRegression().fit(IRIS.data, IRIS.target), tmp_path / "lr.joblib")
    model = load_model(tmp_path / "lr.joblib", "joblib")
    assert not hasattr(model, "predict_proba")
    with pytest.raises(AttributeError, match="predict_proba"):
        model.predict_proba(IRIS.data[:1])
    assert model.coef_.shape == (4,)


def test_raw_objects_of_other_formats(tmp_path: Path) -> None:
    x32 = IRIS.data.astype(np.float32)
    logreg = LogisticRegression(max_iter=500).fit(x32, IRIS.target)
    (tmp_path / "m.onnx").write_bytes(to_onnx(logreg, x32[:1]).SerializeToString())
    onnx = load_model(tmp_path / "m.onnx", "onnx")
    assert type(onnx.raw).__name__ == "InferenceSession"
    assert onnx.get_inputs()[0].shape[1] == 4  # the session's own API

    booster = xgb.train(
        {"objective": "multi:softprob", "num_class": 3},
        xgb.DMatrix(IRIS.data, label=IRIS.target),
        num_boost_round=3,
    )
    booster.save_model(tmp_path / "b.ubj")
    native = load_model(tmp_path / "b.ubj", "xgboost")
    assert isinstance(native.raw, xgb.Booster)
    assert native.num_features() == 4
    assert not hasattr(native, "predict_proba")  # a Booster has none: use predict()


def test_wrappers_copy_and_pickle(tmp_path: Path) -> None:
    joblib.dump(LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target), tmp_path / "l.joblib")
    model = load_model(tmp_path / "l.joblib", "joblib")
    clone = pickle.loads(pickle.dumps(model))
    assert clone.predict(IRIS.data[:2]) == model.predict(IRIS.data[:2])
    assert copy.copy(model).raw is model.raw
