"""Applying a keep-alive policy to one live pool, in real time.

The policies in ``scaling/policies`` are pure: they read a history of idle times and return
windows (pre-warm, keep-alive, version-template hold) in minutes. This is the small stateful
part: it notices when a pool goes idle and busy again, records the idle time, asks the policy
after each idle start, and answers the reaper's two questions: should an instance be loaded
now, and should the version template be kept?

``minute_s`` is the length of a policy minute in seconds: 60 in production; tests shrink it so
hours of policy time pass in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.scaling.policies import (
    Decision,
    FixedKeepAlive,
    KeepAlivePolicy,
    Tier,
    WithVersionTemplate,
    hybrid_policy,
    tier_at,
)


def policy_named(
    name: str, idle_timeout_s: float, minute_s: float, template_minutes: float
) -> KeepAlivePolicy:
    """``fixed`` (keep for idle_timeout_s) or a named hybrid configuration (``hybrid``, ...)."""
    base: KeepAlivePolicy
    base = FixedKeepAlive(idle_timeout_s / minute_s) if name == "fixed" else hybrid_policy(name)
    return WithVersionTemplate(base, template_minutes) if template_minutes > 0 else base


@dataclass
class KeepAlive:
    policy: KeepAlivePolicy
    minute_s: float = 60.0

    def __post_init__(self) -> None:
        self.history = self.policy.new_history()
        self.decision: Decision | None = None
        self.idle_since: float | None = None
        self.prewarmed = False

    def on_busy(self, now: float) -> None:
        """Work arrived at an idle pool: that idle time is one observation."""
        if self.idle_since is not None:
            self.history.add(max(0.0, now - self.idle_since) / self.minute_s)
        self.idle_since = None

    def on_idle(self, now: float) -> None:
        """The pool's last execution just ended: decide the windows until the next one."""
        self.idle_since = now
        self.decision = self.policy.decide(self.history)
        self.prewarmed = False

    def idle_minutes(self, now: float) -> float | None:
        if self.idle_since is None:
            return None
        return (now - self.idle_since) / self.minute_s

    def wants_instance(self, now: float) -> bool:
        idle = self.idle_minutes(now)
        if idle is None or self.decision is None:
            return True  # busy, or never used: nothing to release yet
        return self.decision.is_warm(idle)

    def should_prewarm(self, now: float) -> bool:
        """True once per idle period, when the pre-warm window opens."""
        idle = self.idle_minutes(now)
        if idle is None or self.decision is None or self.prewarmed:
            return False
        if self.decision.pre_warm > 0 and self.decision.is_warm(idle):
            self.prewarmed = True
            return True
        return False

    def wants_template(self, now: float) -> bool:
        idle = self.idle_minutes(now)
        if idle is None or self.decision is None:
            return True
        return tier_at(self.decision, idle) >= Tier.VERSION_TEMPLATE
