"""Forests predicted without joblib give scikit-learn's own answer, bit for bit."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.multioutput import MultiOutputClassifier

from coldbrew.runtime.forests import sequential_predict, sequential_predict_proba
from coldbrew.runtime.loaders import SklearnModel


class TweakedForest(RandomForestClassifier):
    """A subclass may change how it predicts: it must keep its own method."""

    def predict_proba(self, X: Any) -> np.ndarray:
        return np.ones((len(X), 2)) / 2


@pytest.mark.parametrize("kind", [RandomForestClassifier, ExtraTreesClassifier])
@pytest.mark.parametrize("loader", [load_breast_cancer, load_iris, load_wine])
def test_classifiers_equal_predict_proba_bit_for_bit(kind: type, loader: Any) -> None:
    X, y = loader(return_X_y=True)
    forest = kind(n_estimators=30, random_state=0, n_jobs=1).fit(X, y)
    fast = sequential_predict_proba(forest)
    assert fast is not None
    for rows in (X[:1], X[:64], X):
        assert np.array_equal(fast(rows), forest.predict_proba(rows))
    # Lists of floats (what the model handler hands over) validate the same way.
    assert np.array_equal(fast(X[:3].tolist()), forest.predict_proba(X[:3]))


@pytest.mark.parametrize("kind", [RandomForestRegressor, ExtraTreesRegressor])
def test_regressors_equal_predict_bit_for_bit(kind: type) -> None:
    X, y = load_diabetes(return_X_y=True)
    for target in (y, np.column_stack([y, -2 * y])):  # one output and two
        forest = kind(n_estimators=30, random_state=0, n_jobs=1).fit(X, target)
        fast = sequential_predict(forest)
        assert fast is not None
        assert np.array_equal(fast(X), forest.predict(X))


def test_other_estimators_keep_their_own_methods() -> None:
    X, y = load_iris(return_X_y=True)
    assert sequential_predict_proba(GradientBoostingClassifier(n_estimators=3).fit(X, y)) is None
    assert sequential_predict_proba(TweakedForest(n_estimators=3).fit(X, y)) is None
    assert sequential_predict(RandomForestClassifier(n_estimators=3).fit(X, y)) is None
    multi = RandomForestClassifier(n_estimators=3).fit(X, np.column_stack([y, y]))
    assert sequential_predict_proba(multi) is None  # several outputs: a list of arrays
    assert sequential_predict_proba(MultiOutputClassifier(RandomForestClassifier())) is None
    assert sequential_predict_proba(RandomForestClassifier()) is None  # not fitted


def test_model_handler_answers_match_scikit_learn() -> None:
    X, y = load_wine(return_X_y=True)
    forest = RandomForestClassifier(n_estimators=50, random_state=1, n_jobs=1).fit(X, y)
    answer = SklearnModel(forest, "joblib").predict(X[:10])
    assert answer["probabilities"] == forest.predict_proba(X[:10]).tolist()
    assert answer["predictions"] == forest.predict(X[:10]).tolist()
    with pytest.raises(ValueError, match="features"):
        SklearnModel(forest, "joblib").predict(X[:2, :5])  # sklearn's own validation error
