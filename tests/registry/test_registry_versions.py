"""Functions and versions: numbering, content-hash idempotence, latest, deletion."""

from __future__ import annotations

import hashlib
from datetime import UTC

import pytest

from coldbrew import errors
from coldbrew.registry import Registry


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def deploy(registry: Registry, name: str, content: str, **kw: object):  # type: ignore[no-untyped-def]
    return registry.create_version(
        name,
        content_sha256=sha(content),
        config={"handler": "h:handler", "memory_mb": 512},
        manifest={"h.py": sha("code " + content)},
        **kw,  # type: ignore[arg-type]
    )


def test_numbers_start_at_one_and_increase(registry: Registry) -> None:
    numbers = [deploy(registry, "iris", c)[0].number for c in ("a", "b", "c")]
    assert numbers == [1, 2, 3]
    assert [v.number for v in registry.list_versions("iris")] == [1, 2, 3]
    # Numbers are per function.
    assert deploy(registry, "other", "a")[0].number == 1


def test_version_record_round_trips(registry: Registry) -> None:
    created, is_new = deploy(registry, "iris", "a", description="first")
    assert is_new
    got = registry.get_version("iris", 1)
    assert got == created
    assert got.function_name == "iris"
    assert got.content_sha256 == sha("a")
    assert got.config == {"handler": "h:handler", "memory_mb": 512}
    assert got.manifest == {"h.py": sha("code a")}
    assert got.description == "first"
    assert got.created_at.tzinfo is UTC


def test_same_content_is_idempotent_and_moves_latest(registry: Registry) -> None:
    v1, _ = deploy(registry, "iris", "a")
    deploy(registry, "iris", "b")
    assert registry.get_function("iris").latest_version == 2
    again, created = deploy(registry, "iris", "a")
    assert not created
    assert again == v1
    assert registry.get_function("iris").latest_version == 1
    assert len(registry.list_versions("iris")) == 2


def test_latest_moves_on_every_deploy(registry: Registry) -> None:
    for expected, content in enumerate("abc", start=1):
        deploy(registry, "iris", content)
        fn = registry.get_function("iris")
        assert fn.latest_version == expected
        assert fn.aliases == {"latest": expected}


def test_caller_keeps_no_handle_on_stored_config(registry: Registry) -> None:
    config = {"env": {"A": "1"}}
    registry.create_version("iris", content_sha256=sha("a"), config=config, manifest={})
    config["env"]["A"] = "changed"
    assert registry.get_version("iris", 1).config == {"env": {"A": "1"}}


@pytest.mark.parametrize("name", ["", "-x", "_x", "a" * 65, "has space", "a/b", "é"])
def test_invalid_function_names(registry: Registry, name: str) -> None:
    with pytest.raises(errors.ValidationError):
        deploy(registry, name, "a")


@pytest.mark.parametrize("name", ["a", "9lives", "my-func_2", "A" * 64])
def test_valid_function_names(registry: Registry, name: str) -> None:
    assert deploy(registry, name, "a")[0].number == 1


def test_bad_hash_and_config_are_refused(registry: Registry) -> None:
    with pytest.raises(errors.ValidationError):
        registry.create_version("f", content_sha256="xyz", config={}, manifest={})
    with pytest.raises(errors.ValidationError):
        registry.create_version("f", content_sha256=sha("a"), config={"x": object()}, manifest={})
    with pytest.raises(errors.NotFound):
        registry.get_function("f")


def test_functions_listed_by_name(registry: Registry) -> None:
    for name in ("zeta", "alpha", "Mid"):
        deploy(registry, name, "a")
    registry.set_alias("alpha", "prod", 1)
    fns = registry.list_functions()
    assert [f.name for f in fns] == sorted(["zeta", "alpha", "Mid"])
    alpha = next(f for f in fns if f.name == "alpha")
    assert alpha.aliases == {"latest": 1, "prod": 1}
    assert alpha.created_at.tzinfo is UTC and alpha.updated_at >= alpha.created_at


def test_not_found_messages(registry: Registry) -> None:
    with pytest.raises(errors.NotFound, match="function 'nope' not found"):
        registry.get_function("nope")
    for call in (registry.list_versions, registry.list_aliases, registry.delete_function):
        with pytest.raises(errors.NotFound, match="function 'nope' not found"):
            call("nope")
    deploy(registry, "iris", "a")
    with pytest.raises(errors.NotFound, match="version 7 of function 'iris' not found"):
        registry.get_version("iris", 7)


def test_delete_function_cascades(registry: Registry) -> None:
    deploy(registry, "iris", "a")
    deploy(registry, "iris", "b")
    registry.set_alias("iris", "prod", 1, weights={2: 0.25})
    deploy(registry, "keep", "a")
    registry.delete_function("iris")
    with pytest.raises(errors.NotFound):
        registry.get_function("iris")
    with pytest.raises(errors.NotFound):
        registry.resolve("iris", "prod")
    assert [f.name for f in registry.list_functions()] == ["keep"]
    # A function deleted entirely starts over: its history went with it.
    assert deploy(registry, "iris", "c")[0].number == 1
    assert registry.list_aliases("iris")[0].version == 1
    assert registry.get_version("keep", 1).content_sha256 == sha("a")
