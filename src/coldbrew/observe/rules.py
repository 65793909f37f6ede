"""Alert rules: pure evaluation of window statistics against thresholds, no clock, no I/O.

Defaults come from common practice for serverless functions: page when more than 1 % of
invocations fail over 5 minutes, when p95 latency exceeds a threshold, when more than 5 % of
invocations are cold starts, or when spend over the window is several times its trailing
baseline. A rule needs ``min_invocations`` in the window before it may fire, so one failed call
out of three at night does not wake anyone. The loop that applies these lives in
``alerting.py``; tests drive these functions with tables of cases.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.observe.window import WindowStats


@dataclass(frozen=True)
class RuleConfig:
    window_s: float = 300.0
    error_rate: float = 0.01
    p95_ms: float = 1000.0
    cold_start_ratio: float = 0.05
    cost_anomaly_factor: float = 3.0
    cost_anomaly_min_usd: float = 0.01
    """Spend below this in the window never counts as an anomaly (noise at tiny volumes)."""
    min_invocations: int = 20


@dataclass(frozen=True)
class Evaluation:
    rule: str
    function: str
    firing: bool
    value: float | None
    threshold: float
    message: str

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule, self.function)


RULES = ("error_rate", "p95_latency", "cold_start_ratio", "cost_anomaly")


def evaluate(
    function: str,
    stats: WindowStats,
    config: RuleConfig,
    baseline_cost_per_window: float | None = None,
) -> list[Evaluation]:
    """Every rule for one function. ``baseline_cost_per_window`` is the trailing average spend
    per window-length before the window (None: no history yet, so no anomaly can be judged)."""
    enough = stats.invocations >= config.min_invocations
    minutes = config.window_s / 60
    out = [
        Evaluation(
            "error_rate",
            function,
            enough and stats.error_rate > config.error_rate,
            stats.error_rate,
            config.error_rate,
            f"{function}: {stats.error_rate:.1%} of {stats.invocations} invocations failed "
            f"in {minutes:g} min (threshold {config.error_rate:.1%})",
        ),
        Evaluation(
            "p95_latency",
            function,
            enough and stats.p95_ms is not None and stats.p95_ms > config.p95_ms,
            stats.p95_ms,
            config.p95_ms,
            f"{function}: p95 latency {stats.p95_ms or 0:.0f} ms in {minutes:g} min "
            f"(threshold {config.p95_ms:.0f} ms)",
        ),
        Evaluation(
            "cold_start_ratio",
            function,
            enough and stats.cold_start_ratio > config.cold_start_ratio,
            stats.cold_start_ratio,
            config.cold_start_ratio,
            f"{function}: {stats.cold_start_ratio:.1%} cold starts in {minutes:g} min "
            f"(threshold {config.cold_start_ratio:.1%})",
        ),
    ]
    out.append(_cost_anomaly(function, stats, config, baseline_cost_per_window))
    return out


def _cost_anomaly(
    function: str, stats: WindowStats, config: RuleConfig, baseline: float | None
) -> Evaluation:
    limit = None if baseline is None else baseline * config.cost_anomaly_factor
    firing = (
        limit is not None
        and stats.cost_usd >= config.cost_anomaly_min_usd
        and stats.cost_usd > limit
    )
    return Evaluation(
        "cost_anomaly",
        function,
        firing,
        stats.cost_usd,
        limit if limit is not None else 0.0,
        f"{function}: ${stats.cost_usd:.4f} in {config.window_s / 60:g} min, more than "
        f"{config.cost_anomaly_factor:g}x the trailing baseline (${baseline or 0:.4f})",
    )


def transitions(
    active: set[tuple[str, str]], evaluations: list[Evaluation]
) -> tuple[list[Evaluation], list[Evaluation]]:
    """Which alerts start firing and which resolve, given the ones already active."""
    fired = [e for e in evaluations if e.firing and e.key not in active]
    resolved = [e for e in evaluations if not e.firing and e.key in active]
    return fired, resolved
