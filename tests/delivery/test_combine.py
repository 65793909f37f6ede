"""Combining an ensemble's answers (``delivery/combine.py``) and validating its config, by
tables."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from coldbrew.delivery.combine import CombineError, combine
from coldbrew.runtime.config import FunctionConfig


def P(*labels: Any) -> dict[str, Any]:
    return {"predictions": list(labels)}


@pytest.mark.parametrize(
    ("method", "results", "expected"),
    [
        ("vote", [(1, P("a")), (1, P("a")), (1, P("b"))], P("a")),
        ("vote", [(1, P("a", "y")), (1, P("b", "y")), (1, P("b", "x"))], P("b", "y")),
        ("vote", [(1, P("a")), (1, P("b"))], P("a")),  # a tie: the member listed first
        ("vote", [(1, P("a")), (3, P("b")), (1, P("a"))], P("b")),  # weighted
        ("vote", [(1, "cat"), (1, "dog"), (1, "dog")], "dog"),  # bare labels
        ("vote", [(1, [1, 2]), (1, [1, 3]), (1, [0, 3])], [1, 3]),
        ("vote", [(1, P({"k": 1})), (1, P({"k": 1}))], P({"k": 1})),
        ("mean", [(1, P(1.0, 2.0)), (1, P(3.0, 4.0))], P(2.0, 3.0)),
        ("mean", [(1, P(0.0)), (3, P(4.0))], P(3.0)),
        ("mean", [(1, 2), (1, 4)], 3.0),
        ("mean", [(1, P([1.0, 0.0])), (1, P([0.0, 1.0]))], P([0.5, 0.5])),
    ],
)
def test_combine(method: str, results: list[tuple[float, Any]], expected: Any) -> None:
    assert combine(method, results) == expected


def test_mean_of_probabilities() -> None:
    a = {"predictions": ["x"], "probabilities": [[0.6, 0.4]], "classes": ["x", "y"]}
    b = {"predictions": ["y"], "probabilities": [[0.1, 0.9]], "classes": ["x", "y"]}
    assert combine("mean_proba", [(1, a), (1, b)]) == {
        "predictions": ["y"],
        "probabilities": [[0.35, 0.65]],
        "classes": ["x", "y"],
    }
    assert combine("mean_proba", [(5, a), (1, b)])["predictions"] == ["x"]
    no_classes = [(1, {"probabilities": [[0.2, 0.8]]})]
    assert combine("mean_proba", no_classes)["predictions"] == [1]


@pytest.mark.parametrize(
    ("method", "results"),
    [
        ("vote", [(1, P("a", "b")), (1, P("a"))]),  # different numbers of rows
        ("mean", [(1, P("a")), (1, P("b"))]),  # not numbers
        ("mean", [(1, P([1.0])), (1, P([1.0, 2.0]))]),  # ragged
        ("mean_proba", [(1, P("a"))]),  # no probabilities
        ("mean_proba", [(1, {"probabilities": [0.5, 0.5]})]),  # not one list per row
        ("vote", []),
    ],
)
def test_cannot_combine(method: str, results: list[tuple[float, Any]]) -> None:
    with pytest.raises(CombineError):
        combine(method, results)


@pytest.mark.parametrize(
    "config",
    [
        {"kind": "ensemble"},  # no [ensemble]
        {"kind": "ensemble", "ensemble": {"members": []}},
        {"kind": "ensemble", "ensemble": {"members": ["a b"]}},
        {"kind": "ensemble", "ensemble": {"members": ["a"], "combine": "median"}},
        {"kind": "ensemble", "ensemble": {"members": ["a", "b"], "weights": [1]}},
        {"kind": "ensemble", "ensemble": {"members": ["a"], "weights": [0]}},
        {"kind": "ensemble", "ensemble": {"members": ["a"], "quorum": 2}},
        {"ensemble": {"members": ["a"]}},  # a table without the kind
        {"kind": "router", "router": {"routes": {"x": "a"}}},  # neither field nor classifier
        {"kind": "router", "router": {"field": "model", "routes": {"x": "a"}}},
        {"kind": "router", "router": {"field": "$.m", "classifier": "c", "default": "a"}},
        {"kind": "router", "router": {"field": "$.m"}},  # nowhere to go
        {"kind": "pipeline"},
    ],
)
def test_bad_composite_configs(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FunctionConfig.model_validate(config)


def test_good_composite_configs() -> None:
    ensemble = FunctionConfig.model_validate(
        {"kind": "ensemble", "ensemble": {"members": ["a", "b:2", "c:prod"]}}
    )
    assert ensemble.ensemble is not None and ensemble.ensemble.needed == 2
    assert ensemble.handler == "coldbrew.runtime.composite:handler"
    router = FunctionConfig.model_validate(
        {"kind": "router", "router": {"field": "$.model", "routes": {"x": "a:1"}, "default": "b"}}
    )
    assert router.router is not None and router.router.routes == {"x": "a:1"}
    assert FunctionConfig().kind == "function"
