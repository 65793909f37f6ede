"""Tiers of warmth (issue 3, part 2), derived from a policy's decision.

For each function coldbrew holds one of four tiers, from most to least expensive in memory and
from fastest to slowest to serve the next invocation:

==================== ============================ ==========================================
tier                 held                         next invocation
==================== ============================ ==========================================
INSTANCE             a warm instance              served at once
VERSION_TEMPLATE     a fork with the model loaded fork (~5 ms)
RUNTIME_TEMPLATE     the shared runtime template  fork + model load (~50-300 ms)
NOTHING              no process                   fresh interpreter + imports (~1 s)
==================== ============================ ==========================================

The mapping is a pure function of the decision and the idle time so the loop that applies it
(pool supervisor or simulator) needs no policy knowledge of its own.
"""

from __future__ import annotations

import enum

from coldbrew.scaling.policies.base import Decision


class Tier(enum.IntEnum):
    """Ordered so that ``max`` picks the warmer of two tiers."""

    NOTHING = 0
    RUNTIME_TEMPLATE = 1
    VERSION_TEMPLATE = 2
    INSTANCE = 3


def tier_at(decision: Decision, idle_minutes: float, runtime_template: bool = True) -> Tier:
    """The tier to hold ``idle_minutes`` after the last execution ended.

    The instance is held inside ``[pre_warm, pre_warm + keep_alive]``; the version template, if
    the decision keeps one, from the end of the execution until ``template_keep_alive`` after
    the instance is released (bridging the pre-warm gap). Outside both, only the shared runtime
    template remains, or nothing when the platform runs without one.
    """
    if decision.is_warm(idle_minutes):
        return Tier.INSTANCE
    if decision.template_keep_alive > 0 and idle_minutes <= (
        decision.loaded_until + decision.template_keep_alive
    ):
        return Tier.VERSION_TEMPLATE
    return Tier.RUNTIME_TEMPLATE if runtime_template else Tier.NOTHING
