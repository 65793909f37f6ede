"""Hybrid histogram keep-alive after Shahrad et al., "Serverless in the Wild" (ATC 2020).

Each function's idle times are binned (1-minute bins over 4 hours). Three regimes:

1. **Representative histogram** (enough samples, bin-count CV at or above a threshold, i.e. the
   idle times concentrate in a few bins): pre-warm at the head percentile (5th), keep loaded
   until the tail percentile (99th), widened by a margin (head lowered 10 %, tail raised 10 %).
   The tail uses the bin's upper edge so a fractional idle time inside the bin is still covered.
2. **Out-of-bounds dominated** (most idle times exceed the range): the paper forecasts the next
   idle time with ARIMA. We use the median of the last few idle times instead (no statsmodels
   dependency, and a one-day trace gives ARIMA too few points to fit), then pre-warm at
   ``(1 - forecast_margin)`` of it and keep loaded for ``2 * forecast_margin`` of it, as the paper
   does with its prediction.
3. **Otherwise** (too few samples, or idle times spread evenly): a standard fixed keep-alive,
   the histogram range by default as in the paper.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from coldbrew.scaling.policies.base import Decision
from coldbrew.scaling.policies.histogram import IdleHistogram


@dataclass(frozen=True)
class HybridConfig:
    """Knobs of the hybrid policy; the defaults are the paper's."""

    head_percentile: float = 5.0
    tail_percentile: float = 99.0
    margin: float = 0.10
    cv_threshold: float = 2.0
    min_samples: int = 5
    """Fewer in-range idle times than this and the histogram is not trusted yet."""
    range_minutes: int = 240
    fallback_keep_alive: float = 240.0
    """Keep-alive of the standard fallback (paper: the histogram range)."""
    max_oob_share: float = 0.5
    """Above this share of out-of-bounds idle times, forecast instead of using the histogram."""
    forecast_margin: float = 0.15


@dataclass(frozen=True)
class HybridHistogram:
    """The hybrid policy; pure: ``decide`` reads the histogram and nothing else."""

    config: HybridConfig = HybridConfig()
    label: str = "hybrid"

    @property
    def name(self) -> str:
        return self.label

    def new_history(self) -> IdleHistogram:
        return IdleHistogram(range_minutes=self.config.range_minutes)

    def decide(self, history: IdleHistogram) -> Decision:
        cfg = self.config
        if history.out_of_bounds and history.oob_share() > cfg.max_oob_share:
            return self._forecast(history)
        if history.in_range >= cfg.min_samples and history.bin_cv() >= cfg.cv_threshold:
            return self._from_histogram(history)
        return Decision(pre_warm=0.0, keep_alive=cfg.fallback_keep_alive)

    def _from_histogram(self, history: IdleHistogram) -> Decision:
        cfg = self.config
        head = history.percentile_bin(cfg.head_percentile)
        tail_edge = history.percentile_bin(cfg.tail_percentile) + 1
        pre_warm = head * (1.0 - cfg.margin)
        loaded_until = tail_edge * (1.0 + cfg.margin)
        return Decision(pre_warm=pre_warm, keep_alive=loaded_until - pre_warm)

    def _forecast(self, history: IdleHistogram) -> Decision:
        predicted = statistics.median(history.recent)
        m = self.config.forecast_margin
        return Decision(pre_warm=predicted * (1.0 - m), keep_alive=predicted * 2.0 * m)


NAMED_HYBRID_CONFIGS: dict[str, HybridConfig] = {
    "hybrid": HybridConfig(),
    "hybrid-p1-p99": HybridConfig(head_percentile=1.0),
    "hybrid-p5-p95": HybridConfig(tail_percentile=95.0),
    "hybrid-cv5": HybridConfig(cv_threshold=5.0),
    "hybrid-fb10": HybridConfig(fallback_keep_alive=10.0),
}
"""Named configurations: the paper's defaults, and one knob turned in each of the others.

``hybrid-fb10`` falls back to the platform's usual 10-minute keep-alive instead of the 4-hour
range while a function's histogram is not representative: on short traces, and for functions
invoked once or twice a day, that fallback is where most of the paper configuration's extra
memory goes.
"""


def hybrid_policy(name: str) -> HybridHistogram:
    """The hybrid policy of a named configuration, labelled with that name."""
    if name not in NAMED_HYBRID_CONFIGS:
        raise KeyError(
            f"unknown hybrid configuration {name!r}; known: {sorted(NAMED_HYBRID_CONFIGS)}"
        )
    return HybridHistogram(NAMED_HYBRID_CONFIGS[name], label=name)
