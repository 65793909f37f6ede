"""Keep-alive and pre-warm policies: pure functions of a function's idle-time history.

``decide(history) -> Decision`` is all a loop needs; :func:`tier_at` maps a decision to the tier of
warmth to hold at a given idle time. See docs/KEEPALIVE.md.
"""

from coldbrew.scaling.policies.base import Decision, KeepAlivePolicy
from coldbrew.scaling.policies.fixed import FixedKeepAlive
from coldbrew.scaling.policies.histogram import IdleHistogram
from coldbrew.scaling.policies.hybrid import (
    NAMED_HYBRID_CONFIGS,
    HybridConfig,
    HybridHistogram,
    hybrid_policy,
)
from coldbrew.scaling.policies.templates import WithVersionTemplate
from coldbrew.scaling.policies.tiers import Tier, tier_at

__all__ = [
    "NAMED_HYBRID_CONFIGS",
    "Decision",
    "FixedKeepAlive",
    "HybridConfig",
    "HybridHistogram",
    "IdleHistogram",
    "KeepAlivePolicy",
    "Tier",
    "WithVersionTemplate",
    "hybrid_policy",
    "tier_at",
]
