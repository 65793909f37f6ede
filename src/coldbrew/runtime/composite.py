"""``kind = "ensemble"`` and ``kind = "router"``: functions made of other functions.

Their ``[ensemble]`` / ``[router]`` tables are validated here (``FunctionConfig`` holds them);
the gateway runs them, fanning out through the data plane (``coldbrew.delivery.ensemble``).
Their own instances never serve an invocation: ``handler`` is the stand-in below, which only
lets a deploy's trial load succeed.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

COMPOSITE_HANDLER = "coldbrew.runtime.composite:handler"
MEMBER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?::[A-Za-z0-9$][A-Za-z0-9_-]{0,63})?")
"""``name`` or ``name:qualifier`` (a version number or alias)."""
COMBINE_RE = re.compile(r"vote|mean|mean_proba|function:" + MEMBER_RE.pattern)
_PATH_RE = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_-]*|\[[0-9]{1,6}\])+")


def handler(event: Any, context: Any) -> Any:
    raise RuntimeError("an ensemble or router is run by the gateway, not by an instance")


def _member(value: str) -> str:
    if not isinstance(value, str) or not MEMBER_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a function name or name:qualifier")
    return value


class EnsembleConfig(BaseModel):
    """``[ensemble]``: every member gets the event; their answers are combined."""

    model_config = ConfigDict(extra="forbid")

    members: list[str] = Field(min_length=1, max_length=32)
    """Functions or versions: ``"iris-a"``, ``"iris-b:2"``, ``"iris-c:prod"``."""
    combine: str = "vote"
    """``vote`` (majority label per row), ``mean`` (of the predictions), ``mean_proba`` (of
    the class probabilities; the label is the likeliest class), or ``function:NAME`` (a
    function given ``{"event": ..., "results": [...]}`` returns the answer)."""
    weights: list[float] | None = None
    """One per member, for ``vote`` and the means (default: equal)."""
    quorum: int | None = Field(default=None, ge=1)
    """Members that must answer (default: a majority)."""
    member_timeout_s: float = Field(default=10.0, gt=0, le=900)
    """A member slower than this does not count (its invocation still finishes, metered)."""

    @field_validator("members")
    @classmethod
    def _members(cls, value: list[str]) -> list[str]:
        return [_member(m) for m in value]

    @field_validator("combine")
    @classmethod
    def _combine(cls, value: str) -> str:
        if not COMBINE_RE.fullmatch(value):
            raise ValueError("combine is vote, mean, mean_proba or function:NAME")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleConfig:
        if self.weights is not None:
            if len(self.weights) != len(self.members):
                raise ValueError("weights has one number per member")
            if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
                raise ValueError("weights are non-negative and not all zero")
        if self.quorum is not None and self.quorum > len(self.members):
            raise ValueError("quorum cannot exceed the number of members")
        return self

    @property
    def needed(self) -> int:
        return self.quorum or len(self.members) // 2 + 1


class RouterConfig(BaseModel):
    """``[router]``: one member per event, chosen by a field of the event or a classifier."""

    model_config = ConfigDict(extra="forbid")

    field: str | None = None
    """JSON path of the event field whose value picks the route (``$.model``)."""
    classifier: str | None = None
    """A function whose answer (a string, or ``{"route": ...}``) picks the route."""
    routes: dict[str, str] = Field(default_factory=dict)
    """Route value -> member (``name`` or ``name:qualifier``)."""
    default: str | None = None
    """The member for a value no route names (else the call is refused: 400)."""
    member_timeout_s: float = Field(default=30.0, gt=0, le=900)

    @field_validator("routes")
    @classmethod
    def _routes(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: _member(v) for k, v in value.items()}

    @field_validator("default", "classifier")
    @classmethod
    def _optional_member(cls, value: str | None) -> str | None:
        return None if value is None else _member(value)

    @field_validator("field")
    @classmethod
    def _field(cls, value: str | None) -> str | None:
        if value is not None and not _PATH_RE.fullmatch(value):
            raise ValueError("field is a JSON path like '$.model'")
        return value

    @model_validator(mode="after")
    def _one_chooser(self) -> RouterConfig:
        if (self.field is None) == (self.classifier is None):
            raise ValueError("a router needs exactly one of field or classifier")
        if not self.routes and self.default is None:
            raise ValueError("a router needs routes or a default")
        return self
