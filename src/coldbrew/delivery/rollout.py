"""The rollout decision: from one step's statistics of the baseline and the candidate, advance,
hold or roll back. Pure (no clock, no I/O), tested by tables; ``controller.py`` applies it.

- **Roll back** as soon as the candidate has ``min_samples`` invocations in the step and its
  error rate exceeds the baseline's by more than ``max_error_rate_delta`` (a failing candidate
  is stopped inside its first step, not at the step's end); as soon as it has ``min_feedback``
  feedback on predictions it made in the step and its accuracy is under ``min_accuracy``, or
  under the baseline's minus ``max_accuracy_drop`` (either bound is optional; accuracy is
  judged only when one is set); or, at the step's end, when its
  p95 exceeds the baseline's times ``max_p95_ratio`` (latency is judged over the whole step,
  so that one slow burst on a busy machine does not decide).
- **Advance** when the step has lasted ``step_duration_s`` and the candidate has stayed within
  every bound with at least ``min_samples`` invocations (and, when accuracy is judged,
  ``min_feedback`` feedback); the last step's advance completes the rollout (the alias moves
  to the candidate, weights removed).
- **Hold** otherwise: the step is not over, or the candidate has too few invocations (or too
  little feedback) to judge: a quiet function waits for evidence rather than being promoted on
  none.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from coldbrew import errors

Action = Literal["advance", "complete", "hold", "rollback"]


@dataclass(frozen=True)
class Criteria:
    max_error_rate_delta: float = 0.01
    """Candidate error rate minus baseline error rate above this rolls back."""
    max_p95_ratio: float = 1.2
    """Candidate p95 over baseline p95 above this rolls back."""
    min_samples: int = 100
    """Candidate invocations a step needs before any verdict."""
    p95_floor_ms: float = 5.0
    """Latencies under this are never a regression (a 1 ms vs 2 ms p95 is noise)."""
    min_accuracy: float | None = None
    """Candidate accuracy (share of correct feedback) under this rolls back."""
    max_accuracy_drop: float | None = None
    """Candidate accuracy under the baseline's minus this rolls back (when the baseline has
    ``min_feedback`` feedback too)."""
    min_feedback: int = 20
    """Feedback on the candidate's predictions of the step before accuracy is judged."""

    @property
    def judges_accuracy(self) -> bool:
        return self.min_accuracy is not None or self.max_accuracy_drop is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class VersionStats:
    invocations: int
    errors: int
    p95_ms: float | None
    feedback: int = 0
    """Classification feedback received on this version's predictions of the period."""
    correct: int = 0

    @property
    def error_rate(self) -> float:
        return self.errors / self.invocations if self.invocations else 0.0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.feedback if self.feedback else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_rate": self.error_rate, "accuracy": self.accuracy}


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str


def decide(
    baseline: VersionStats,
    candidate: VersionStats,
    criteria: Criteria,
    elapsed_s: float,
    step_duration_s: float,
    last_step: bool,
) -> Decision:
    enough = candidate.invocations >= criteria.min_samples
    if enough:
        delta = candidate.error_rate - baseline.error_rate
        if delta > criteria.max_error_rate_delta:
            return Decision(
                "rollback",
                f"candidate error rate {candidate.error_rate:.2%} over {candidate.invocations} "
                f"invocations exceeds the baseline's {baseline.error_rate:.2%} by more than "
                f"{criteria.max_error_rate_delta:.2%}",
            )
    wrong = _accuracy_regression(baseline, candidate, criteria)
    if wrong:
        return Decision("rollback", wrong)
    if elapsed_s < step_duration_s:
        return Decision("hold", "the step is not over")
    slow = _p95_regression(baseline, candidate, criteria) if enough else None
    if slow:
        return Decision("rollback", slow)
    if not enough:
        return Decision(
            "hold",
            f"waiting for {criteria.min_samples} candidate invocations "
            f"({candidate.invocations} so far)",
        )
    if criteria.judges_accuracy and candidate.feedback < criteria.min_feedback:
        return Decision(
            "hold",
            f"waiting for {criteria.min_feedback} feedback on the candidate's predictions "
            f"of this step ({candidate.feedback} so far)",
        )
    if last_step:
        return Decision("complete", "the candidate stayed within bounds through the last step")
    return Decision("advance", "the candidate stayed within bounds through the step")


def _accuracy_regression(
    baseline: VersionStats, candidate: VersionStats, criteria: Criteria
) -> str | None:
    accuracy = candidate.accuracy
    if not criteria.judges_accuracy or accuracy is None:
        return None
    if candidate.feedback < criteria.min_feedback:
        return None
    said = f"candidate accuracy {accuracy:.1%} over {candidate.feedback} feedback"
    if criteria.min_accuracy is not None and accuracy < criteria.min_accuracy:
        return f"{said} is under the bound {criteria.min_accuracy:.1%}"
    base, drop = baseline.accuracy, criteria.max_accuracy_drop
    if drop is None or base is None or baseline.feedback < criteria.min_feedback:
        return None  # no baseline accuracy to compare with (yet)
    if accuracy < base - drop:
        return f"{said} is under the baseline's {base:.1%} by more than {drop:.1%}"
    return None


def _p95_regression(
    baseline: VersionStats, candidate: VersionStats, criteria: Criteria
) -> str | None:
    if candidate.p95_ms is None or baseline.p95_ms is None:
        return None  # no baseline latency to compare with (yet)
    limit = max(baseline.p95_ms * criteria.max_p95_ratio, criteria.p95_floor_ms)
    if candidate.p95_ms <= limit:
        return None
    return (
        f"candidate p95 {candidate.p95_ms:.1f} ms exceeds the baseline's "
        f"{baseline.p95_ms:.1f} ms x {criteria.max_p95_ratio:g}"
    )


# --- parsing what a user gives --------------------------------------------------------------

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(text: str | float) -> float:
    """``10m``, ``30s``, ``1.5h``, ``500ms`` or plain seconds -> seconds (positive, <= 1 week)."""
    if isinstance(text, bool):
        raise errors.ValidationError("a step duration is a number of seconds or like '10m'")
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        found = _DURATION.match(text.strip()) if isinstance(text, str) else None
        if not found:
            raise errors.ValidationError(
                f"step duration {text!r} is not a duration: use e.g. 30s, 10m, 1h"
            )
        seconds = float(found.group(1)) * _UNIT_S[found.group(2)]
    if not 0 < seconds <= 7 * 86400:
        raise errors.ValidationError("a step duration is more than 0 and at most one week")
    return seconds


def parse_steps(given: Any) -> list[float]:
    """Percentages (``[5, 25, 50, 100]`` or ``"5,25,50,100"``) -> ascending fractions ending at
    1.0. ``[100]`` is blue/green: all traffic at once, watched for one step."""
    if isinstance(given, str):
        parts: list[Any] = [p for p in given.split(",") if p.strip()]
    elif isinstance(given, list):
        parts = given
    else:
        raise errors.ValidationError("steps are percentages like [5, 25, 50, 100]")
    try:
        values = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise errors.ValidationError("steps are percentages like 5,25,50,100") from None
    if not values or len(values) > 20:
        raise errors.ValidationError("a rollout has 1 to 20 steps")
    if any(not 0 < v <= 100 for v in values) or values != sorted(set(values)):
        raise errors.ValidationError("steps must be increasing percentages in (0, 100]")
    if values[-1] != 100:
        raise errors.ValidationError("the last step must be 100 (all traffic on the candidate)")
    return [v / 100 for v in values]


def parse_criteria(body: dict[str, Any]) -> Criteria:
    try:
        criteria = Criteria(
            max_error_rate_delta=float(body.get("max_error_rate_delta", 0.01)),
            max_p95_ratio=float(body.get("max_p95_ratio", 1.2)),
            min_samples=int(body.get("min_samples", 100)),
            min_accuracy=_optional_fraction(body, "min_accuracy"),
            max_accuracy_drop=_optional_fraction(body, "max_accuracy_drop"),
            min_feedback=int(body.get("min_feedback", 20)),
        )
    except (TypeError, ValueError, OverflowError):
        raise errors.ValidationError(
            "max_error_rate_delta, max_p95_ratio, min_accuracy and max_accuracy_drop are "
            "numbers, min_samples and min_feedback integers"
        ) from None
    for name in ("min_accuracy", "max_accuracy_drop"):
        value = getattr(criteria, name)
        if value is not None and not 0 <= value <= 1:
            raise errors.ValidationError(f"{name} is a fraction in [0, 1]")
    if not 1 <= criteria.min_feedback <= 10_000_000:
        raise errors.ValidationError("min_feedback is an integer in [1, 10000000]")
    if not 0 <= criteria.max_error_rate_delta <= 1:
        raise errors.ValidationError("max_error_rate_delta is a fraction in [0, 1]")
    if not 1 <= criteria.max_p95_ratio <= 1000:
        raise errors.ValidationError("max_p95_ratio is a ratio in [1, 1000]")
    if not 1 <= criteria.min_samples <= 10_000_000:
        raise errors.ValidationError("min_samples is an integer in [1, 10000000]")
    return criteria


def _optional_fraction(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(name)
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(name)
    return number
