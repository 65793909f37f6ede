"""What every keep-alive policy returns, and the interface the stateful loops call.

A policy is pure math: it reads an :class:`~coldbrew.scaling.policies.histogram.IdleHistogram`
(the observations the loop has recorded) and returns a :class:`Decision`. It does no I/O and reads
no clock, so the same object drives the real scheduler and the trace simulator, and tests can
check it with tables of cases.

Windows follow Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020): after an execution
ends the instance is released, re-loaded ("pre-warmed") ``pre_warm`` minutes later and kept for
``keep_alive`` minutes. ``pre_warm == 0`` means "keep it loaded right after the execution".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from coldbrew.scaling.policies.histogram import IdleHistogram


@dataclass(frozen=True)
class Decision:
    """Windows, in minutes counted from the end of the last execution.

    ``template_keep_alive`` extends coldbrew's cheaper tier: the version template (model loaded,
    no instance) is held from the end of the execution until ``pre_warm + keep_alive +
    template_keep_alive``, so a cold start inside that span costs a fork (~5 ms) rather than a
    model load. Zero means no version template is held beyond the instance.
    """

    pre_warm: float
    keep_alive: float
    template_keep_alive: float = 0.0

    def __post_init__(self) -> None:
        if min(self.pre_warm, self.keep_alive, self.template_keep_alive) < 0:
            raise ValueError(f"windows must be >= 0, got {self}")

    @property
    def loaded_until(self) -> float:
        """Idle time at which the instance is released again."""
        return self.pre_warm + self.keep_alive

    def is_warm(self, idle_minutes: float) -> bool:
        """Whether an invocation arriving after ``idle_minutes`` finds a loaded instance."""
        return self.pre_warm <= idle_minutes <= self.loaded_until


class KeepAlivePolicy(Protocol):
    """A pluggable keep-alive / pre-warm policy.

    The loop records each idle time (minutes between the end of one execution and the next
    invocation) in the function's histogram, then asks ``decide`` for the windows that apply
    until the next invocation.
    """

    @property
    def name(self) -> str:
        """Stable label used in reports, settings and metrics."""
        ...

    def new_history(self) -> IdleHistogram:
        """An empty history of the shape this policy reads (e.g. its histogram range)."""
        ...

    def decide(self, history: IdleHistogram) -> Decision:
        """The windows to apply after the execution that just ended."""
        ...
