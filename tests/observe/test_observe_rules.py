"""Alert rules, pricing and the window as tables of cases: pure functions, no server."""

from __future__ import annotations

import pytest

from coldbrew.core.pricing import PRICE_TABLES, charge
from coldbrew.observe.logs import parse_since, select_lines
from coldbrew.observe.rules import RuleConfig, evaluate, transitions
from coldbrew.observe.window import WindowStats, percentile

CFG = RuleConfig(min_invocations=20, p95_ms=500)


def stats(n: int = 100, errors: int = 0, cold: int = 0, p95: float = 10, cost: float = 0.0):
    return WindowStats(n, errors, 0, cold, p95, p95, p95, cost, 0.0)


@pytest.mark.parametrize(
    ("window", "baseline", "firing"),
    [
        (stats(errors=1), None, set()),  # exactly 1 %: not above
        (stats(errors=2), None, {"error_rate"}),
        (stats(n=10, errors=5), None, set()),  # too few invocations to judge
        (stats(p95=501), None, {"p95_latency"}),
        (stats(cold=6), None, {"cold_start_ratio"}),
        (stats(cold=5), None, set()),
        (stats(cost=1.0), 0.1, {"cost_anomaly"}),
        (stats(cost=0.2), 0.1, set()),  # 2x baseline, under the 3x factor
        (stats(cost=0.005), 0.0001, set()),  # below the minimum spend
        (stats(cost=1.0), None, set()),  # no baseline yet
    ],
)
def test_rules(window: WindowStats, baseline: float | None, firing: set[str]) -> None:
    assert {e.rule for e in evaluate("f", window, CFG, baseline) if e.firing} == firing


def test_transitions_fire_once_and_resolve() -> None:
    bad = evaluate("f", stats(errors=50), CFG)
    fired, resolved = transitions(set(), bad)
    assert [e.rule for e in fired] == ["error_rate"] and not resolved
    fired, resolved = transitions({("error_rate", "f")}, bad)
    assert not fired and not resolved
    fired, resolved = transitions({("error_rate", "f")}, evaluate("f", stats(), CFG))
    assert not fired and [e.rule for e in resolved] == ["error_rate"]


@pytest.mark.parametrize(
    ("table", "memory", "billed", "usd"),
    [
        ("aws-x86", 1024, 1000, 0.0000166667 + 0.0000002),
        ("aws-x86", 128, 1, 128 / 1024 / 1000 * 0.0000166667 + 0.0000002),
        ("aws-arm64", 2048, 500, 1.0 * 0.0000133334 + 0.0000002),
        ("aws-x86", 512, None, 0.0),  # throttled: never ran, not billed
    ],
)
def test_charge(table: str, memory: int, billed: int | None, usd: float) -> None:
    assert charge(PRICE_TABLES[table], memory, billed).cost_usd == pytest.approx(usd, abs=1e-15)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 95, None), ([5.0], 95, 5.0), ([float(i) for i in range(1, 101)], 95, 95.0)],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("10m", 600), ("2h", 7200), (None, None)]
)
def test_parse_since(text: str | None, seconds: float | None) -> None:
    assert parse_since(text) == seconds


def test_select_lines_by_request() -> None:
    log = (
        "boot\nSTART RequestId: a V\nhi\nEND RequestId: a\nREPORT RequestId: a\n"
        "START RequestId: b V\nyo\nEND RequestId: b\nREPORT RequestId: b\n"
    )
    assert select_lines(log, "b")[1] == "yo"
    assert select_lines(log, request_ids={"a"})[1] == "hi"
    assert select_lines(log, tail=1) == ["REPORT RequestId: b"]
