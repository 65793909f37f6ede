"""Add coldbrew's version-template tier to any policy.

A version template (a forked process with the model loaded) costs less memory than an idle
instance and turns a cold start into a ~5 ms fork. Wrapping a policy keeps its instance windows
(so its cold-start count is unchanged) and holds the version template ``minutes`` longer,
bridging the pre-warm gap too; the simulator then prices the difference in milliseconds and
GB-minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coldbrew.scaling.policies.base import Decision, KeepAlivePolicy
from coldbrew.scaling.policies.histogram import IdleHistogram


@dataclass(frozen=True)
class WithVersionTemplate:
    """``inner``'s windows, plus a version template held ``minutes`` past the instance."""

    inner: KeepAlivePolicy
    minutes: float

    @property
    def name(self) -> str:
        return f"{self.inner.name}+vt{self.minutes:g}"

    def new_history(self) -> IdleHistogram:
        return self.inner.new_history()

    def decide(self, history: IdleHistogram) -> Decision:
        return replace(self.inner.decide(history), template_keep_alive=float(self.minutes))
