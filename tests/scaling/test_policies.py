"""Keep-alive policies are pure: tables of (history, expected decision)."""

from __future__ import annotations

import math

import pytest

from coldbrew.scaling.policies import (
    Decision,
    FixedKeepAlive,
    HybridConfig,
    HybridHistogram,
    IdleHistogram,
    Tier,
    WithVersionTemplate,
    hybrid_policy,
    tier_at,
)

PAPER = HybridHistogram()


@pytest.mark.parametrize(
    ("minutes", "idle_times", "expected"),
    [
        (10, [], Decision(0.0, 10.0)),
        (10, [3.0, 400.0], Decision(0.0, 10.0)),
        (1, [], Decision(0.0, 1.0)),
        (0, [], Decision(0.0, 0.0)),
        (240, [1.0] * 50, Decision(0.0, 240.0)),
    ],
)
def test_fixed_ignores_history(minutes: float, idle_times: list[float], expected: Decision) -> None:
    assert FixedKeepAlive(minutes).decide(IdleHistogram.of(idle_times)) == expected


@pytest.mark.parametrize(
    ("case", "idle_times", "pre_warm", "loaded_until"),
    [
        ("all exactly 5 min", [5.0] * 20, 4.5, 6.6),
        ("all 0: keep loaded right away", [0.0] * 20, 0.0, 1.1),
        ("fractional idle in the same bin", [5.7] * 20, 4.5, 6.6),
        ("head 1st bin, tail 10 min", [1.0] * 19 + [10.0], 0.9, 12.1),
        ("two modes, 99th at the upper one", [2.0] * 50 + [30.0] * 50, 1.8, 34.1),
        ("too few samples: fallback", [5.0] * 4, 0.0, 240.0),
        ("no history: fallback", [], 0.0, 240.0),
        ("spread evenly (CV 0): fallback", [float(m) for m in range(240)], 0.0, 240.0),
        ("out-of-bounds dominated: forecast", [300.0] * 6, 255.0, 345.0),
        ("mostly OOB, median of recent", [5.0, 600.0, 700.0, 800.0], 552.5, 747.5),
    ],
)
def test_hybrid_windows(
    case: str, idle_times: list[float], pre_warm: float, loaded_until: float
) -> None:
    decision = PAPER.decide(IdleHistogram.of(idle_times))
    assert decision.pre_warm == pytest.approx(pre_warm), case
    assert decision.loaded_until == pytest.approx(loaded_until), case


@pytest.mark.parametrize(
    ("config", "idle_times", "expected"),
    [
        (HybridConfig(margin=0.0), [5.0] * 20, Decision(5.0, 1.0)),
        (HybridConfig(min_samples=2), [5.0] * 2, Decision(4.5, 2.1)),
        (HybridConfig(cv_threshold=20.0), [5.0] * 20, Decision(0.0, 240.0)),
        (HybridConfig(fallback_keep_alive=10.0), [], Decision(0.0, 10.0)),
        (HybridConfig(range_minutes=4), [5.0] * 20, Decision(4.25, 1.5)),
    ],
)
def test_hybrid_knobs(config: HybridConfig, idle_times: list[float], expected: Decision) -> None:
    policy = HybridHistogram(config)
    decision = policy.decide(IdleHistogram.of(idle_times, config.range_minutes))
    assert decision.pre_warm == pytest.approx(expected.pre_warm)
    assert decision.keep_alive == pytest.approx(expected.keep_alive)


@pytest.mark.parametrize(
    ("idle_times", "pct", "bin_"),
    [
        ([5.0] * 10, 5, 5),
        ([5.0] * 10, 99, 5),
        ([1.0] * 95 + [7.0] * 5, 95, 1),
        ([1.0] * 95 + [7.0] * 5, 99, 7),
        ([float(m) for m in range(100)], 50, 49),
        ([0.0, 239.9], 99, 239),
    ],
)
def test_histogram_percentile(idle_times: list[float], pct: float, bin_: int) -> None:
    assert IdleHistogram.of(idle_times).percentile_bin(pct) == bin_


@pytest.mark.parametrize(
    ("idle_times", "cv"),
    [
        ([], 0.0),
        ([5.0], math.sqrt(239)),
        ([5.0] * 7, math.sqrt(239)),
        ([float(m) for m in range(240)], 0.0),
        ([float(m) for m in range(120)], 1.0),
    ],
)
def test_histogram_cv(idle_times: list[float], cv: float) -> None:
    assert IdleHistogram.of(idle_times).bin_cv() == pytest.approx(cv)


def test_histogram_counts_out_of_bounds() -> None:
    hist = IdleHistogram.of([1.0, 240.0, 1000.0])
    assert (hist.in_range, hist.out_of_bounds, hist.oob_share()) == (1, 2, pytest.approx(2 / 3))


@pytest.mark.parametrize(
    ("decision", "idle", "runtime_template", "tier"),
    [
        (Decision(0, 10), 0, True, Tier.INSTANCE),
        (Decision(0, 10), 10, True, Tier.INSTANCE),
        (Decision(0, 10), 10.5, True, Tier.RUNTIME_TEMPLATE),
        (Decision(0, 10), 10.5, False, Tier.NOTHING),
        (Decision(4.5, 2.1), 3, True, Tier.RUNTIME_TEMPLATE),
        (Decision(4.5, 2.1), 5, True, Tier.INSTANCE),
        (Decision(4.5, 2.1, 60), 3, True, Tier.VERSION_TEMPLATE),
        (Decision(4.5, 2.1, 60), 66.6, True, Tier.VERSION_TEMPLATE),
        (Decision(4.5, 2.1, 60), 67, True, Tier.RUNTIME_TEMPLATE),
        (Decision(0, 10, 30), 40, False, Tier.VERSION_TEMPLATE),
    ],
)
def test_tier_at(decision: Decision, idle: float, runtime_template: bool, tier: Tier) -> None:
    assert tier_at(decision, idle, runtime_template) is tier


def test_version_template_wrapper_keeps_instance_windows() -> None:
    policy = WithVersionTemplate(hybrid_policy("hybrid"), 60)
    hist = IdleHistogram.of([5.0] * 20)
    assert policy.name == "hybrid+vt60"
    decision = policy.decide(hist)
    assert (decision.pre_warm, decision.template_keep_alive) == (4.5, 60.0)
    assert decision.keep_alive == pytest.approx(2.1)


def test_decision_rejects_negative_windows() -> None:
    with pytest.raises(ValueError):
        Decision(-1.0, 10.0)


def test_unknown_named_configuration() -> None:
    with pytest.raises(KeyError, match="known"):
        hybrid_policy("nope")


def test_every_named_keep_alive_policy_exists() -> None:
    """Config validation knows the names without importing scaling; they must agree."""
    from coldbrew.core.policy_names import KEEP_ALIVE_POLICIES
    from coldbrew.scaling.policies import NAMED_HYBRID_CONFIGS

    assert set(KEEP_ALIVE_POLICIES) == {"fixed", *NAMED_HYBRID_CONFIGS}
