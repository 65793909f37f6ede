"""Random forests and extra-trees predicted without joblib's per-call machinery.

scikit-learn's forests predict through ``joblib.Parallel`` even with ``n_jobs=1`` (and instances
always run single-threaded: see ``loaders._single_threaded``). For a 100-tree forest that
machinery costs ~2.8 ms of a ~3.6 ms prediction of one row: three quarters of the time a small
model spends per call. This module runs the same loop itself: the forest's own input validation
(float32, feature count, fitted), then each tree's low-level ``tree_.predict`` in the forest's
order, sliced as ``DecisionTree*.predict_proba`` / ``predict`` slice it (their per-tree checks
repeat what the forest has just validated), and the same float64 accumulation and division. With
one thread, scikit-learn sums in exactly that order, so the result is equal bit for bit (tested
against ``predict_proba`` / ``predict`` for every supported class, binary and multi-class, one
output and several).

Only the exact scikit-learn classes are taken (a subclass may override ``predict``), with one
output for classifiers; anything else keeps the estimator's own method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Predict = Callable[[Any], np.ndarray]


def sequential_predict_proba(estimator: Any) -> Predict | None:
    """A function equal to ``estimator.predict_proba``, bit for bit, or None if not a forest
    classifier this module knows."""
    if not _from_sklearn_ensemble(estimator):
        return None
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier

    if type(estimator) not in (RandomForestClassifier, ExtraTreesClassifier):
        return None
    if not _fitted_forest(estimator) or estimator.n_outputs_ != 1:
        return None
    trees = [(tree.tree_, int(tree.n_classes_)) for tree in estimator.estimators_]
    n_classes = int(estimator.n_classes_)

    def predict_proba(instances: Any) -> np.ndarray:
        matrix = estimator._validate_X_predict(instances)
        proba = np.zeros((matrix.shape[0], n_classes), dtype=np.float64)
        for tree, classes in trees:
            # DecisionTreeClassifier.predict_proba(check_input=False) with one output, minus
            # its per-tree fitted/feature checks: the forest has just validated the matrix.
            proba += tree.predict(matrix)[:, :classes]
        proba /= len(trees)
        return proba

    return predict_proba


def sequential_predict(estimator: Any) -> Predict | None:
    """A function equal to ``estimator.predict`` for forest regressors, bit for bit, or None."""
    if not _from_sklearn_ensemble(estimator):
        return None
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    if type(estimator) not in (RandomForestRegressor, ExtraTreesRegressor):
        return None
    if not _fitted_forest(estimator):
        return None
    trees = [tree.tree_ for tree in estimator.estimators_]
    n_outputs = int(estimator.n_outputs_)

    def predict(instances: Any) -> np.ndarray:
        matrix = estimator._validate_X_predict(instances)
        shape = (matrix.shape[0], n_outputs) if n_outputs > 1 else (matrix.shape[0],)
        estimate = np.zeros(shape, dtype=np.float64)
        for tree in trees:
            # DecisionTreeRegressor.predict(check_input=False), minus its per-tree checks.
            values = tree.predict(matrix)
            estimate += values[:, 0] if n_outputs == 1 else values[:, :, 0]
        estimate /= len(trees)
        return estimate

    return predict


def _from_sklearn_ensemble(estimator: Any) -> bool:
    # Checked before importing scikit-learn: an XGBoost or ONNX model must not pay for it.
    return type(estimator).__module__.startswith("sklearn.ensemble")


def _fitted_forest(estimator: Any) -> bool:
    # _validate_X_predict is private: if a future scikit-learn renames it, fall back to the
    # estimator's own method rather than fail.
    return bool(getattr(estimator, "estimators_", None)) and callable(
        getattr(estimator, "_validate_X_predict", None)
    )
