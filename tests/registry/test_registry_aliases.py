"""Aliases and resolution of ``name[:qualifier]``."""

from __future__ import annotations

import hashlib

import pytest

from coldbrew import errors
from coldbrew.registry import Registry


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def iris(registry: Registry) -> Registry:
    """A registry holding function ``iris`` with versions 1, 2 and 3 (latest = 3)."""
    for content in "abc":
        registry.create_version("iris", content_sha256=sha(content), config={}, manifest={})
    return registry


@pytest.mark.parametrize("qualifier", [None, "$LATEST", "latest"])
def test_resolve_latest(iris: Registry, qualifier: str | None) -> None:
    assert iris.resolve("iris", qualifier).number == 3


def test_resolve_number_and_alias(iris: Registry) -> None:
    assert iris.resolve("iris", "2").number == 2
    iris.set_alias("iris", "prod", 1)
    assert iris.resolve("iris", "prod").number == 1
    assert iris.resolve("iris", "prod").content_sha256 == sha("a")


def test_resolve_not_found_names_what_is_missing(iris: Registry) -> None:
    with pytest.raises(errors.NotFound, match="function 'nope' not found"):
        iris.resolve("nope")
    with pytest.raises(errors.NotFound, match="version 9 of function 'iris' not found"):
        iris.resolve("iris", "9")
    with pytest.raises(errors.NotFound, match="alias 'prod' of function 'iris' not found"):
        iris.resolve("iris", "prod")


def test_set_alias_moves_and_lists(iris: Registry) -> None:
    first = iris.set_alias("iris", "prod", 1)
    assert (first.function_name, first.name, first.version, first.weights) == (
        "iris",
        "prod",
        1,
        None,
    )
    moved = iris.set_alias("iris", "prod", 2)
    assert moved.version == 2 and moved.updated_at >= first.updated_at
    iris.set_alias("iris", "staging", 3)
    assert [(a.name, a.version) for a in iris.list_aliases("iris")] == [
        ("latest", 3),
        ("prod", 2),
        ("staging", 3),
    ]
    assert iris.get_function("iris").aliases == {"latest": 3, "prod": 2, "staging": 3}


def test_weights_are_stored(iris: Registry) -> None:
    alias = iris.set_alias("iris", "prod", 2, weights={3: 0.1, 1: 0.05})
    assert alias.weights == {3: 0.1, 1: 0.05}
    (stored,) = [a for a in iris.list_aliases("iris") if a.name == "prod"]
    assert stored.weights == {3: 0.1, 1: 0.05}
    # Moving the alias without weights clears the split.
    assert iris.set_alias("iris", "prod", 2).weights is None
    # A deploy moves latest as a plain pointer.
    iris.set_alias("iris", "latest", 3, weights={2: 0.5})
    iris.create_version("iris", content_sha256=sha("d"), config={}, manifest={})
    latest = next(a for a in iris.list_aliases("iris") if a.name == "latest")
    assert (latest.version, latest.weights) == (4, None)


@pytest.mark.parametrize(
    "weights",
    [{3: 1.0}, {3: 0.6, 1: 0.4}, {3: -0.1}, {3: 1.5}, {2: 0.1}, {3: float("nan")}, {0: 0.1}],
)
def test_invalid_weights(iris: Registry, weights: dict[int, float]) -> None:
    with pytest.raises(errors.ValidationError):
        iris.set_alias("iris", "prod", 2, weights=weights)


def test_weights_must_name_existing_versions(iris: Registry) -> None:
    with pytest.raises(errors.NotFound, match="version 8 of function 'iris' not found"):
        iris.set_alias("iris", "prod", 2, weights={8: 0.1})
    assert [a.name for a in iris.list_aliases("iris")] == ["latest"]


@pytest.mark.parametrize("alias", ["", "1", "123", "9abc", "-x", "a b", "$LATEST", "a" * 65, "x/y"])
def test_invalid_alias_names(iris: Registry, alias: str) -> None:
    with pytest.raises(errors.ValidationError):
        iris.set_alias("iris", alias, 1)


@pytest.mark.parametrize("alias", ["prod", "Blue-Green_2", "a" * 64])
def test_valid_alias_names(iris: Registry, alias: str) -> None:
    assert iris.set_alias("iris", alias, 1).name == alias


def test_set_alias_needs_function_and_version(iris: Registry) -> None:
    with pytest.raises(errors.NotFound, match="function 'nope' not found"):
        iris.set_alias("nope", "prod", 1)
    with pytest.raises(errors.NotFound, match="version 4 of function 'iris' not found"):
        iris.set_alias("iris", "prod", 4)


def test_delete_alias(iris: Registry) -> None:
    iris.set_alias("iris", "prod", 1)
    iris.delete_alias("iris", "prod")
    assert [a.name for a in iris.list_aliases("iris")] == ["latest"]
    with pytest.raises(errors.NotFound, match="alias 'prod' of function 'iris' not found"):
        iris.delete_alias("iris", "prod")
    with pytest.raises(errors.Conflict):
        iris.delete_alias("iris", "latest")
    assert iris.resolve("iris").number == 3
