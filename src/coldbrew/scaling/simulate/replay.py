"""Replaying one function's per-minute counts through a policy, in simulated time.

Accounting (kept identical for every policy so they compare fairly):

* An active minute (one with invocations) is busy for the whole minute: invocations inside a
  minute are spread over it, so the instance cannot be released in between. The idle time
  before the next active minute ``t2`` after an active minute ``t1`` is ``t2 - t1 - 1`` minutes
  (0 for consecutive minutes). Each idle time is fed to the policy's history.
* The first invocation of an active minute is cold when no instance is loaded at the minute's
  start (the decision made after the previous active minute says so); the others in the same
  minute reuse that instance, as in the paper (one application image per function, no
  concurrency model). The very first invocation of the trace is always cold.
* Wasted memory-time is the time an instance is loaded but not executing: ``idle - pre_warm``
  when the next invocation is warm, ``keep_alive`` when the instance expired before it, zero when
  it arrived during the pre-warm gap. After the last invocation the windows are clipped to the
  end of the trace. Weighted by the function's memory, it is money (GB-minutes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coldbrew.scaling.policies import Decision, KeepAlivePolicy, Tier, tier_at
from coldbrew.scaling.simulate.costs import TierCosts
from coldbrew.scaling.simulate.trace import FunctionTrace


@dataclass
class FunctionResult:
    """Totals of one function under one policy."""

    invocations: int = 0
    cold_starts: int = 0
    idle_instance_minutes: float = 0.0
    template_minutes: float = 0.0
    cold_start_ms: float = 0.0

    @property
    def cold_start_pct(self) -> float:
        return 100.0 * self.cold_starts / self.invocations if self.invocations else 0.0


def held_minutes(decision: Decision, span: float) -> tuple[float, float]:
    """(instance-loaded, template-only) minutes within the first ``span`` idle minutes."""
    instance = max(min(decision.loaded_until, span) - decision.pre_warm, 0.0)
    template = 0.0
    if decision.template_keep_alive > 0:
        held = min(span, decision.loaded_until + decision.template_keep_alive)
        template = max(held - instance, 0.0)
    return instance, template


def replay_function(
    function: FunctionTrace, policy: KeepAlivePolicy, minutes: int, costs: TierCosts
) -> FunctionResult:
    """Replay ``function`` through ``policy`` over a trace of ``minutes`` minutes."""
    result = FunctionResult(invocations=int(function.counts.sum()))
    history = policy.new_history()
    first_tier = Tier.RUNTIME_TEMPLATE if costs.runtime_template else Tier.NOTHING
    decision: Decision | None = None
    busy_until = 0
    for t in np.flatnonzero(function.counts).tolist():
        if decision is None:
            result.cold_starts += 1
            result.cold_start_ms += costs.cold_start_ms(first_tier)
        else:
            idle = float(t - busy_until)
            _charge_gap(result, decision, idle, costs)
            history.add(idle)
        decision = policy.decide(history)
        busy_until = t + 1
    if decision is not None:
        instance, template = held_minutes(decision, float(minutes - busy_until))
        result.idle_instance_minutes += instance
        result.template_minutes += template
    return result


def _charge_gap(result: FunctionResult, decision: Decision, idle: float, costs: TierCosts) -> None:
    instance, template = held_minutes(decision, idle)
    result.idle_instance_minutes += instance
    result.template_minutes += template
    tier = tier_at(decision, idle, runtime_template=costs.runtime_template)
    if tier is not Tier.INSTANCE:
        result.cold_starts += 1
        result.cold_start_ms += costs.cold_start_ms(tier)
