"""The weighted choice of ``dataplane/split.py``, by tables."""

from __future__ import annotations

import pytest

from coldbrew.dataplane import split

W = [(0.25, "v2")]
W3 = [(0.1, "v2"), (0.2, "v3")]


@pytest.mark.parametrize(
    ("weighted", "draw", "expected"),
    [
        ([], 0.0, "v1"),
        ([], 0.999, "v1"),
        (W, 0.0, "v2"),
        (W, 0.2499, "v2"),
        (W, 0.25, "v1"),
        (W, 0.9999, "v1"),
        (W3, 0.05, "v2"),
        (W3, 0.1, "v3"),
        (W3, 0.2999, "v3"),
        (W3, 0.3001, "v1"),
        ([(0.0, "v2")], 0.0, "v1"),
    ],
)
def test_pick(weighted: list[tuple[float, str]], draw: float, expected: str) -> None:
    assert split.pick("v1", weighted, draw) == expected


@pytest.mark.parametrize(
    ("event", "path", "expected"),
    [
        ({"user": {"id": "u-1"}}, "$.user.id", "u-1"),
        ({"user": {"id": 42}}, "$.user.id", "42"),
        ({"user": {"id": True}}, "$.user.id", "true"),
        ({"items": [{"k": "a"}, {"k": "b"}]}, "$.items[1].k", "b"),
        ({"items": []}, "$.items[0].k", None),
        ({"user": {}}, "$.user.id", None),
        ({"user": {"id": None}}, "$.user.id", None),
        ({"user": {"id": {"nested": 1}}}, "$.user.id", None),
        ([1, 2], "$.user", None),
        ("text", "$.user", None),
        ({"user-name": "x"}, "$.user-name", "x"),
    ],
)
def test_find(event: object, path: str, expected: str | None) -> None:
    assert split.find(event, path) == expected


@pytest.mark.parametrize(
    ("header", "path", "event", "payload", "expected"),
    [
        ("h", "$.user", {"user": "e"}, b"", "h"),  # the header wins
        (None, "$.user", {"user": "e"}, b"", "e"),
        (None, "$.user", None, b'{"user": "p"}', "p"),  # parsed from the payload
        (None, "$.user", None, b"not json", None),
        (None, None, {"user": "e"}, b"", None),
        ("", "$.user", {"user": "e"}, b"", "e"),
    ],
)
def test_sticky_key(
    header: str | None, path: str | None, event: object, payload: bytes, expected: str | None
) -> None:
    assert split.sticky_key(header, path, event, payload) == expected


def test_a_key_never_switches_while_weights_stay() -> None:
    for n in range(500):
        first = split.choose("v1", W, "fn:canary", f"user-{n}")
        assert all(split.choose("v1", W, "fn:canary", f"user-{n}") == first for _ in range(5))


def test_keys_spread_by_the_weights() -> None:
    chosen = [split.choose("v1", W, "fn:canary", f"user-{n}") for n in range(20_000)]
    share = chosen.count("v2") / len(chosen)
    assert 0.23 < share < 0.27


def test_a_growing_candidate_only_takes_keys_from_the_baseline() -> None:
    """As a rollout raises the candidate's fraction, a key on the candidate stays there."""
    keys = [f"k{n}" for n in range(2000)]
    before = {k: split.choose("v1", [(0.05, "v2")], "f:a", k) for k in keys}
    after = {k: split.choose("v1", [(0.5, "v2")], "f:a", k) for k in keys}
    assert all(after[k] == "v2" for k in keys if before[k] == "v2")


def test_aliases_split_independently() -> None:
    keys = [f"k{n}" for n in range(2000)]
    a = [split.choose("v1", W, "f:a", k) for k in keys]
    b = [split.choose("v1", W, "f:b", k) for k in keys]
    assert a != b


def test_without_a_key_the_draw_is_random() -> None:
    draws = iter([0.1, 0.9])
    assert split.choose("v1", W, "s", None, rand=lambda: next(draws)) == "v2"
    assert split.choose("v1", W, "s", None, rand=lambda: next(draws)) == "v1"


@pytest.mark.parametrize(
    "path", ["user.id", "$", "$.", "$..id", "$.user[x]", "$['a']", "$.a" * 100, "$.1abc"]
)
def test_bad_sticky_paths_are_refused(path: str) -> None:
    from coldbrew import errors
    from coldbrew.registry.names import check_sticky_path

    with pytest.raises(errors.ValidationError):
        check_sticky_path(path)


@pytest.mark.parametrize("path", ["$.user.id", "$.items[0].key", "$[0]", "$.a_b-c"])
def test_good_sticky_paths(path: str) -> None:
    from coldbrew.registry.names import check_sticky_path

    assert check_sticky_path(path) == path
