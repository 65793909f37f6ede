"""What a cold start and an idle minute cost in coldbrew, by tier of warmth.

The defaults are measurements from this machine quoted in issue 3 (a fork from a version
template answers in ~5 ms; forking the runtime template and loading a model takes 50-300 ms
depending on the model, 200 ms is used; a fresh interpreter that imports scikit-learn and loads a
forest ~1 s). They are parameters, not truths: pass the numbers ``bench/coldstart.py`` measures
for your models.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.scaling.policies import Tier


@dataclass(frozen=True)
class TierCosts:
    """Milliseconds added to an invocation that starts from each tier, and template memory."""

    version_template_ms: float = 5.0
    runtime_template_ms: float = 200.0
    nothing_ms: float = 1000.0
    template_memory_fraction: float = 0.5
    """Memory of a version template alone, as a fraction of an instance's (the model's pages,
    without the per-invocation working set); measure it as PSS on your models."""
    runtime_template: bool = True
    """Whether the shared runtime template is kept (coldbrew's default); if not, tier NOTHING."""

    def cold_start_ms(self, tier: Tier) -> float:
        return {
            Tier.INSTANCE: 0.0,
            Tier.VERSION_TEMPLATE: self.version_template_ms,
            Tier.RUNTIME_TEMPLATE: self.runtime_template_ms,
            Tier.NOTHING: self.nothing_ms,
        }[tier]
