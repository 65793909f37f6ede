"""A circuit breaker for a version whose instances keep failing to start.

A handler that raises at import, or a model that does not load, fails every start the same
way. Without a breaker each caller, and each queued caller, forks one more doomed instance
(~19 a second) and waits its whole queue deadline. With it::

    closed ── `threshold` consecutive start failures within `window_s` ──▶ open
    open ── backoff elapsed ──▶ half-open: one trial start, every other caller refused
    half-open ── the trial starts ──▶ closed
              └─ the trial fails ──▶ open again, for twice as long (base_s·2^k, up to cap_s)

While it is not closed, callers are refused at once with the start's own error (the pool
turns it into INIT_ERROR). The breaker belongs to one version's pool: deploying a fixed
version, or restarting the server, starts from a closed breaker.

Pure policy: no clock, no I/O; every method takes ``now`` (monotonic seconds), so the state
machine is tested with tables (tests/scaling/test_breaker.py).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    threshold: int = 3
    """Consecutive start failures (within ``window_s``) that open the breaker."""
    window_s: float = 60.0
    """Failures older than this are forgotten: a rare transient failure never opens it."""
    base_s: float = 1.0
    """Backoff after the breaker first opens; doubled on every failed trial."""
    cap_s: float = 60.0
    """The longest backoff."""
    trial_timeout_s: float = 120.0
    """A trial start not heard of for this long is given up, so another may be tried."""

    def backoff_s(self, trips: int) -> float:
        """How long the breaker stays open after its ``trips``-th consecutive opening."""
        if trips <= 0:
            return 0.0
        return min(self.cap_s, self.base_s * 2.0 ** min(trips - 1, 63))


class Breaker:
    """The start-failure history of one version, and whether a start may be tried now."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self.state = BreakerState.CLOSED
        self.failures: deque[float] = deque()
        """When the current run of consecutive failures happened (closed state)."""
        self.trips = 0
        """Consecutive openings without a successful start (drives the backoff)."""
        self.open_until = 0.0
        self.trial_started = 0.0
        self.total_failures = 0

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    def allow_start(self, now: float) -> bool:
        """Whether a start may be tried now. In the open state, once the backoff has passed,
        the first caller gets True and becomes the half-open trial; the rest get False."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN:
            if now - self.trial_started < self.policy.trial_timeout_s:
                return False
        elif now < self.open_until:
            return False
        self.state = BreakerState.HALF_OPEN
        self.trial_started = now
        return True

    def on_success(self) -> None:
        """An instance started: the version works, forget its failures."""
        self.state = BreakerState.CLOSED
        self.failures.clear()
        self.trips = 0
        self.open_until = 0.0

    def on_failure(self, now: float) -> None:
        """An instance failed to start (its own fault, not a kill by the platform)."""
        self.total_failures += 1
        if self.state is BreakerState.HALF_OPEN:
            self._open(now)
            return
        if self.state is BreakerState.OPEN:
            return  # a start begun before the breaker opened: already accounted for
        self.failures.append(now)
        while self.failures and now - self.failures[0] > self.policy.window_s:
            self.failures.popleft()
        if len(self.failures) >= self.policy.threshold:
            self._open(now)

    def on_abandoned(self) -> None:
        """A start ended without an answer (killed by the platform): a half-open breaker may
        try another trial at once, as its backoff has already passed."""
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.OPEN

    def retry_after_s(self, now: float) -> float:
        """Seconds until the next start may be tried (0 when one may be tried now)."""
        if self.state is BreakerState.OPEN:
            return max(0.0, self.open_until - now)
        return 0.0  # closed, or half-open with the trial under way: its verdict comes soon

    def settled(self, now: float) -> bool:
        """Nothing worth remembering: closed with no recent failure, or open so long ago that
        a fresh breaker would do as well (lets the pool be forgotten)."""
        if self.state is BreakerState.CLOSED:
            return not self.failures or now - self.failures[-1] > self.policy.window_s
        if self.state is BreakerState.OPEN:
            return now - self.open_until > self.policy.window_s
        return False

    def _open(self, now: float) -> None:
        self.trips += 1
        self.state = BreakerState.OPEN
        self.open_until = now + self.policy.backoff_s(self.trips)
        self.failures.clear()

    def describe(self, now: float) -> dict[str, object]:
        return {
            "state": self.state.value,
            "consecutive_failures": len(self.failures),
            "trips": self.trips,
            "retry_after_s": round(self.retry_after_s(now), 3),
            "start_failures": self.total_failures,
        }
