"""Model loaders: turn a model file into something with one ``predict(instances)`` method.

One class per family of formats, all answering the same shape of result so the built-in model
handler, the batcher and the gateway never care which library is underneath:

    {"predictions": [...], "probabilities": [[p0, p1, ...], ...], "classes": [...]}

``probabilities`` and ``classes`` appear only when the model provides them.

Fork safety: instances are forked from templates that must not have started a thread pool. So
this module imports nothing heavy at import time (onnxruntime, xgboost, skops and joblib are
imported inside the loader functions), loading a model runs no prediction, and every model is
pinned to one thread: parallelism comes from running more instances, not from threads that
would fight each other for the same cores (and that GNU OpenMP cannot survive a fork with).
PyTorch and LightGBM models may take more (``threads`` in coldbrew.toml), but only once they are
in an instance: ``enter_instance()``, called after the fork, is the first moment they may.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from coldbrew import errors
from coldbrew.runtime.forests import sequential_predict, sequential_predict_proba

__all__ = ["LOADERS", "LoadedModel", "ModelLoadError", "enter_instance", "load_model"]


class ModelLoadError(errors.ColdbrewError):
    """A model file could not be turned into a working model (missing, corrupt, wrong format)."""

    code = "MODEL_LOAD_ERROR"
    status = 422


@runtime_checkable
class LoadedModel(Protocol):
    """What the runtime puts on ``context.model`` for the built-in model handler."""

    format: str
    n_features: int | None
    """Number of input columns when the model declares it; lets callers reject bad rows early
    with a clear message instead of a library-specific stack trace."""

    def predict(self, instances: np.ndarray) -> dict[str, list[Any]]:
        """{"predictions": [...]} plus "probabilities": [[p_class0, p_class1, ...], ...] when the
        model has them (and "classes": [...] labels in the order of the probability columns, when
        known). Values are plain JSON-able Python (no numpy scalars)."""
        ...


class Passthrough:
    """What a handler reaches on ``context.model`` beyond coldbrew's ``predict``: ``raw``, the
    library's own object (estimator, pipeline, InferenceSession, Booster, torch module), and
    every attribute of it the wrapper does not define itself, so ``context.model.predict_proba``
    / ``classes_`` / ``feature_importances_`` are the estimator's own wherever it has them."""

    _raw_attribute = "estimator"

    @property
    def raw(self) -> Any:
        return self.__dict__[self._raw_attribute]

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails; private and dunder names never pass through
        # (copy and pickle probe for those).
        raw = self.__dict__.get(self._raw_attribute) if not name.startswith("_") else None
        if raw is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(raw, name)


@contextmanager
def one_openmp_thread() -> Iterator[None]:
    """Keep OpenMP at one thread while a model loads.

    XGBoost runs OpenMP parallel loops while it reads a model (a Booster file or an unpickled
    XGBClassifier), and the first such loop starts libgomp's worker pool: in a version template
    that pool would be lost by the fork, and a child that later used it would hang.
    threadpoolctl limits the OpenMP runtimes already loaded; one loaded inside the block (a
    pickle naming lightgbm imports it) reads ``OMP_NUM_THREADS`` as it starts, hence both."""
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    previous = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        with threadpool_limits(limits=1, user_api="openmp"):
            yield
    finally:
        if previous is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = previous


def _plain(values: Any) -> list[Any]:
    """numpy arrays → nested lists of Python scalars, so results serialise with any JSON lib."""
    if isinstance(values, np.ndarray):
        return values.tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _flat_if_single_column(values: np.ndarray) -> np.ndarray:
    """Regressors often answer shape (n, 1); callers expect one value per row."""
    if values.ndim == 2 and values.shape[1] == 1:
        return values.ravel()
    return values


# --------------------------------------------------------------------------- scikit-learn API


class SklearnModel(Passthrough):
    """Any object with the scikit-learn ``predict`` / ``predict_proba`` API: estimators,
    pipelines, and XGBoost's sklearn wrappers (XGBClassifier / XGBRegressor)."""

    def __init__(self, estimator: Any, fmt: str) -> None:
        self.estimator = estimator
        self.format = fmt
        n_features = getattr(estimator, "n_features_in_", None)
        self.n_features = int(n_features) if isinstance(n_features, int | np.integer) else None
        # hasattr is right here: sklearn hides predict_proba (available_if) when the
        # estimator cannot produce it, e.g. SVC(probability=False) or a regressor pipeline.
        self._has_proba = hasattr(estimator, "predict_proba")
        # Forests skip joblib's per-call machinery (same result, bit for bit: forests.py).
        self._predict = sequential_predict(estimator) or estimator.predict
        if self._has_proba:
            self._predict_proba = sequential_predict_proba(estimator) or estimator.predict_proba
        classes = getattr(estimator, "classes_", None)
        self._classes = _plain(np.asarray(classes)) if classes is not None else None
        self._argmax_predicts = (
            self._has_proba
            and classes is not None
            and np.asarray(classes).ndim == 1
            and _final_step_name(estimator) in ARGMAX_CLASSIFIERS
        )

    def predict(self, instances: np.ndarray) -> dict[str, list[Any]]:
        if not self._has_proba:
            return {"predictions": _plain(np.asarray(self._predict(instances)))}
        probabilities = np.asarray(self._predict_proba(instances))
        if self._argmax_predicts:
            # Same answer as predict(), without walking every tree a second time.
            labels = np.asarray(self.estimator.classes_).take(probabilities.argmax(axis=1))
        else:
            labels = np.asarray(self._predict(instances))
        result: dict[str, list[Any]] = {
            "predictions": _plain(labels),
            "probabilities": _plain(probabilities),
        }
        if self._classes is not None:
            result["classes"] = list(self._classes)
        return result


# Classifiers whose predict() is by definition classes_[argmax(predict_proba())]. Others (SVC's
# Platt scaling, for one) may disagree with their own probabilities, so they keep predict().
ARGMAX_CLASSIFIERS = frozenset(
    {
        "RandomForestClassifier",
        "ExtraTreesClassifier",
        "DecisionTreeClassifier",
        "ExtraTreeClassifier",
        "GradientBoostingClassifier",
        "HistGradientBoostingClassifier",
        "LogisticRegression",
        "KNeighborsClassifier",
        "GaussianNB",
        "MultinomialNB",
        "BernoulliNB",
        "XGBClassifier",
        "LGBMClassifier",
    }
)


def _final_step_name(estimator: Any) -> str:
    steps = getattr(estimator, "steps", None)
    if steps:
        return _final_step_name(steps[-1][1])
    return type(estimator).__name__


def _single_threaded(estimator: Any) -> None:
    """Set every ``n_jobs`` parameter (also nested ones, ``clf__n_jobs``) to 1.

    A model trained with ``n_jobs=-1`` would otherwise start a pool per prediction inside every
    instance; XGBoost's sklearn wrapper with n_jobs=None uses all cores through OpenMP."""
    get_params = getattr(estimator, "get_params", None)
    if get_params is None:
        return
    try:
        names = [k for k in get_params(deep=True) if k == "n_jobs" or k.endswith("__n_jobs")]
        if names:
            estimator.set_params(**dict.fromkeys(names, 1))
    except Exception:  # best effort: an exotic estimator still predicts, just maybe threaded
        pass


def _check_predicts(obj: Any) -> Any:
    if not callable(getattr(obj, "predict", None)):
        raise TypeError(f"the file holds a {type(obj).__name__}, which has no predict() method")
    return obj


def _load_joblib(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    import joblib  # joblib.load also reads plain pickles

    with one_openmp_thread():
        estimator = _check_predicts(joblib.load(path))
    _single_threaded(estimator)
    return SklearnModel(estimator, fmt)


def _load_skops(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    import skops.io

    # The deployer chose this file, so the types it names are trusted as a whole; skops still
    # refuses files that are not skops archives.
    trusted = skops.io.get_untrusted_types(file=path)
    with one_openmp_thread():
        estimator = _check_predicts(skops.io.load(path, trusted=trusted))
    _single_threaded(estimator)
    return SklearnModel(estimator, fmt)


# --------------------------------------------------------------------------- ONNX

_ONNX_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


class OnnxModel(Passthrough):
    """An ONNX graph run by onnxruntime on one CPU thread.

    skl2onnx classifiers have two outputs, the label and the probabilities; the probabilities
    are either a ZipMap (a list of {class: p} dicts) or a plain (n, k) tensor. Regressors and
    other graphs have one output, returned as predictions."""

    format = "onnx"
    _raw_attribute = "session"

    def __init__(self, session: Any, class_labels: list[Any] | None) -> None:
        self.session = session
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ValueError(
                f"the graph has {len(inputs)} inputs ({names}); coldbrew's model handler feeds "
                "one 2-D tensor, so export the model with a single input or deploy a bundle"
            )
        self._input_name = inputs[0].name
        self._input_dtype = _ONNX_DTYPES.get(inputs[0].type, np.float32)
        shape = inputs[0].shape
        self.n_features = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
        self._output_names = [o.name for o in session.get_outputs()]
        self._class_labels = class_labels

    def predict(self, instances: np.ndarray) -> dict[str, list[Any]]:
        feed = {self._input_name: np.ascontiguousarray(instances, dtype=self._input_dtype)}
        outputs = self.session.run(self._output_names, feed)
        result: dict[str, list[Any]] = {
            "predictions": _plain(_flat_if_single_column(np.asarray(outputs[0])))
        }
        if len(outputs) >= 2:
            probabilities = outputs[1]
            if isinstance(probabilities, list):  # ZipMap: one {class: p} dict per row
                classes = list(probabilities[0]) if probabilities else self._class_labels or []
                result["probabilities"] = [
                    [float(row[c]) for c in classes] for row in probabilities
                ]
                result["classes"] = _plain(classes)
            else:
                result["probabilities"] = _plain(np.asarray(probabilities))
                if self._class_labels is not None:
                    result["classes"] = list(self._class_labels)
        return result


def _onnx_class_labels(path: Path) -> list[Any] | None:
    """Class labels stored in the graph's classifier node (skl2onnx writes them there).

    Best effort: without a ZipMap the probability tensor does not name its columns, and the
    labels are only known from the node attributes."""
    try:
        import onnx
        from onnx import helper

        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:
        return None
    for node in graph.node:
        for attr in node.attribute:
            if attr.name in ("classlabels_int64s", "classlabels_ints", "classlabels_strings"):
                labels = helper.get_attribute_value(attr)
                return [x.decode() if isinstance(x, bytes) else int(x) for x in labels]
    return None


def _load_onnx(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(
        str(path), sess_options=options, providers=["CPUExecutionProvider"]
    )
    probability_is_tensor = len(session.get_outputs()) >= 2 and session.get_outputs()[
        1
    ].type.startswith("tensor")
    labels = _onnx_class_labels(path) if probability_is_tensor else None
    return OnnxModel(session, labels)


# --------------------------------------------------------------------------- XGBoost Booster


def _softmax(margins: np.ndarray) -> np.ndarray:
    shifted = margins - margins.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class XGBoostModel(Passthrough):
    """A native XGBoost Booster (.json / .ubj), its output shaped by the saved objective."""

    format = "xgboost"
    _raw_attribute = "booster"

    def __init__(self, booster: Any) -> None:
        self.booster = booster
        learner = json.loads(booster.save_config())["learner"]
        self.objective: str = learner["objective"]["name"]
        self.num_class = int(learner["learner_model_param"].get("num_class", "0") or 0)
        self.n_features = int(booster.num_features()) or None

    def _raw(self, instances: np.ndarray, predict_type: str = "value") -> np.ndarray:
        # Rows are positional, so feature names saved with the model (when it was trained on a
        # DataFrame) must not be checked against a plain array.
        return np.asarray(
            self.booster.inplace_predict(
                instances, predict_type=predict_type, validate_features=False
            )
        )

    def predict(self, instances: np.ndarray) -> dict[str, list[Any]]:
        objective = self.objective
        if objective == "binary:logistic":
            p = self._raw(instances).astype(np.float64)
            return {
                "predictions": _plain((p >= 0.5).astype(np.int64)),
                "probabilities": _plain(np.column_stack([1.0 - p, p])),
                "classes": [0, 1],
            }
        if objective in ("multi:softprob", "multi:softmax"):
            # softmax's "value" output is the label only; the margins give the probabilities.
            rows = _softmax(self._raw(instances, "margin").astype(np.float64))
            return {
                "predictions": _plain(rows.argmax(axis=1)),
                "probabilities": _plain(rows),
                "classes": list(range(rows.shape[1])),
            }
        # reg:*, binary:hinge / logitraw, count:*, rank:*, survival:*: the raw values.
        return {"predictions": _plain(_flat_if_single_column(self._raw(instances)))}


def _load_xgboost(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    import xgboost

    with one_openmp_thread():
        booster = xgboost.Booster(params={"nthread": 1}, model_file=str(path))
        booster.set_param({"nthread": 1})
        return XGBoostModel(booster)


# --------------------------------------------------------------------------- LightGBM Booster

LIGHTGBM_MULTICLASS = frozenset({"multiclass", "softmax", "multiclassova", "multiclass_ova"})


class LightGBMModel(Passthrough):
    """A native LightGBM Booster (``model.txt`` / ``.lgb``), its output shaped by the saved
    objective. Predicts on one thread until ``enter_instance`` (then ``threads``)."""

    format = "lightgbm"
    _raw_attribute = "booster"

    def __init__(self, booster: Any, threads: int) -> None:
        self.booster = booster
        self.objective: str = str(booster.params.get("objective", "")).split()[0]
        self.n_features = int(booster.num_feature()) or None
        self.threads = threads
        self._predict_threads = 1

    def enter_instance(self) -> None:
        self._predict_threads = self.threads

    def predict(self, instances: np.ndarray) -> dict[str, list[Any]]:
        values = np.asarray(self.booster.predict(instances, num_threads=self._predict_threads))
        if self.objective in ("binary", "cross_entropy", "xentropy") and values.ndim == 1:
            return {
                "predictions": _plain((values >= 0.5).astype(np.int64)),
                "probabilities": _plain(np.column_stack([1.0 - values, values])),
                "classes": [0, 1],
            }
        if self.objective in LIGHTGBM_MULTICLASS and values.ndim == 2:
            return {
                "predictions": _plain(values.argmax(axis=1)),
                "probabilities": _plain(values),
                "classes": list(range(values.shape[1])),
            }
        # regression, ranking, poisson, ...: the raw values.
        return {"predictions": _plain(_flat_if_single_column(values))}


def _load_lightgbm(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    import lightgbm

    with one_openmp_thread():  # LightGBM parses the trees in an OpenMP loop
        booster = lightgbm.Booster(model_file=str(path))
    return LightGBMModel(booster, threads)


def _load_torchscript(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    from coldbrew.runtime.torch_loader import load_torchscript

    return load_torchscript(path, fmt, threads)


def _load_torch_export(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    from coldbrew.runtime.torch_loader import load_torch_export

    return load_torch_export(path, fmt, threads)


# --------------------------------------------------------------------------- entry point

LOADERS: dict[str, Callable[[Path, str, int], LoadedModel]] = {
    "joblib": _load_joblib,
    "pickle": _load_joblib,
    "skops": _load_skops,
    "onnx": _load_onnx,
    "xgboost": _load_xgboost,
    "lightgbm": _load_lightgbm,
    "torchscript": _load_torchscript,
    "torch_export": _load_torch_export,
}
OPTIONAL_LIBRARIES = {"lightgbm": "lightgbm", "torchscript": "torch", "torch_export": "torch"}
"""Formats whose library is an optional extra (``pip install 'coldbrew[torch]'``)."""


def enter_instance(model: Any) -> None:
    """Let a model take its configured threads: call once per instance, after the fork."""
    hook = getattr(model, "enter_instance", None)
    if callable(hook):
        hook()


def load_model(path: Path, fmt: str, threads: int = 1) -> LoadedModel:
    """Load the model at ``path`` in format ``fmt`` (as ``FunctionConfig.resolved_model_format``
    returns it). Runs no prediction and starts no thread, so it is safe in a template that forks
    afterwards; ``threads`` (PyTorch, LightGBM) applies from ``enter_instance`` on.

    Raises ``ModelLoadError`` naming the file, the format and the cause."""
    path = Path(path)
    loader = LOADERS.get(fmt)
    if loader is None:
        raise ModelLoadError(
            f"cannot load model '{path.name}': unknown format '{fmt}' "
            f"(known: {', '.join(sorted(LOADERS))})",
            file=path.name,
            format=fmt,
        )
    if not path.is_file():
        raise ModelLoadError(
            f"cannot load {fmt} model '{path.name}': file not found", file=path.name, format=fmt
        )
    try:
        return loader(path, fmt, threads)
    except ModuleNotFoundError as exc:
        library = OPTIONAL_LIBRARIES.get(fmt)
        if library is None or exc.name != library:
            raise _load_error(path, fmt, exc) from exc
        raise ModelLoadError(
            f"cannot load {fmt} model '{path.name}': {library} is not installed on this server "
            f"(pip install 'coldbrew[{library}]')",
            file=path.name,
            format=fmt,
        ) from exc
    except Exception as exc:
        raise _load_error(path, fmt, exc) from exc


def _load_error(path: Path, fmt: str, exc: BaseException) -> ModelLoadError:
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelLoadError(
        f"cannot load {fmt} model '{path.name}': {type(exc).__name__}: {cause}",
        file=path.name,
        format=fmt,
    )
