"""Fixed keep-alive: what AWS Lambda, Azure Functions and most FaaS platforms do.

Kept as a policy (not a special case in the loop) so it is the baseline every other policy is
measured against, with the same accounting.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.scaling.policies.base import Decision
from coldbrew.scaling.policies.histogram import IdleHistogram


@dataclass(frozen=True)
class FixedKeepAlive:
    """Keep the instance loaded for ``minutes`` after every execution; never pre-warm."""

    minutes: float

    def __post_init__(self) -> None:
        if self.minutes < 0:
            raise ValueError("minutes must be >= 0")

    @property
    def name(self) -> str:
        return f"fixed-{self.minutes:g}"

    def new_history(self) -> IdleHistogram:
        # Fixed ignores history; a one-bin histogram keeps the loop uniform at no cost.
        return IdleHistogram(range_minutes=1)

    def decide(self, history: IdleHistogram) -> Decision:
        return Decision(pre_warm=0.0, keep_alive=float(self.minutes))
