"""The cost model: every invocation billed the way a cloud function is.

A request costs ``per_request`` plus ``memory_mb / 1024 x billed seconds x per_gb_second``,
where the billed duration is the handler's duration rounded up to 1 ms (Lambda's rule since
December 2020). Instances kept warm by ``min_instances`` cost ``per_provisioned_gb_second`` for
every second they are held, as Lambda's provisioned concurrency does. Pure functions only: the
meter, the metrics and the what-if reports all call these, so they agree to the cent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel


class PriceTable(BaseModel, frozen=True):
    """Prices in USD. The defaults are AWS Lambda's published x86 prices (us-east-1)."""

    name: str = "aws-x86"
    per_request: float = 0.20 / 1_000_000
    per_gb_second: float = 0.0000166667
    per_provisioned_gb_second: float = 0.0000041667
    """Lambda's provisioned-concurrency price for the time an instance is held warm."""


PRICE_TABLES: dict[str, PriceTable] = {
    "aws-x86": PriceTable(),
    "aws-arm64": PriceTable(
        name="aws-arm64",
        per_gb_second=0.0000133334,
        per_provisioned_gb_second=0.0000033334,
    ),
}
"""Selectable by ``COLDBREW_PRICE_TABLE``; ``custom`` takes ``COLDBREW_PRICE_TABLE_CUSTOM``."""


def price_table(name: str, custom: PriceTable | None = None) -> PriceTable:
    if name == "custom":
        if custom is None:
            raise ValueError("COLDBREW_PRICE_TABLE=custom needs COLDBREW_PRICE_TABLE_CUSTOM")
        return custom
    try:
        return PRICE_TABLES[name]
    except KeyError:
        choices = ", ".join([*PRICE_TABLES, "custom"])
        raise ValueError(f"unknown price table {name!r}; choose one of {choices}") from None


def billed_ms(duration_ms: float) -> int:
    """Rounded up to 1 ms with a 1 ms minimum (as ``Outcome.billed_duration_ms``)."""
    return max(1, math.ceil(duration_ms))


def gb_seconds(memory_mb: int, billed: int) -> float:
    return memory_mb / 1024 * billed / 1000


@dataclass(frozen=True)
class Charge:
    """What one invocation costs."""

    billed_ms: int
    gb_seconds: float
    cost_usd: float


def charge(prices: PriceTable, memory_mb: int, billed: int | None) -> Charge:
    """The bill of one invocation; ``billed=None`` (it never ran: throttled, rejected) is free,
    as on Lambda, where a throttled request is not charged."""
    if billed is None:
        return Charge(0, 0.0, 0.0)
    gbs = gb_seconds(memory_mb, billed)
    return Charge(billed, gbs, prices.per_request + gbs * prices.per_gb_second)


def provisioned_cost(prices: PriceTable, memory_mb: int, instances: int, seconds: float) -> float:
    return instances * memory_mb / 1024 * seconds * prices.per_provisioned_gb_second


def always_on_cost(hourly_usd: float, seconds: float) -> float:
    """What an always-on server at ``hourly_usd`` costs over the same period."""
    return hourly_usd * seconds / 3600
