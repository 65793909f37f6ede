"""What-if cost questions answered from a trace of invocations per minute.

Deliberately simple, and explicit about it:

- **memory size**: the same invocations billed at each memory size, with the handler's
  duration held constant (``duration_ms``). On Lambda CPU grows with memory, so CPU-bound
  handlers get faster above ~1,769 MB; measure at two sizes before trusting a bigger one.
- **provisioned concurrency**: ``n`` instances per function held for the whole trace at the
  provisioned price, plus the invocations at the on-demand price. With at least one held
  instance the simulator's one-instance-per-function model has no cold starts left.
- **keep-alive policy**: delegated to ``coldbrew.scaling.simulate`` (see docs/KEEPALIVE.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from coldbrew.core.pricing import PriceTable, billed_ms, gb_seconds
from coldbrew.scaling.simulate import Trace


@dataclass(frozen=True)
class Scenario:
    label: str
    invocations: int
    gb_seconds: float
    cost_usd: float
    cold_starts: int | None


def cold_starts_on_demand(trace: Trace) -> int:
    """First invocation of each active minute after an idle one (the simulator's rule with a
    keep-alive shorter than a minute: an upper bound)."""
    total = 0
    for function in trace.functions:
        active = function.counts > 0
        total += int(active[0]) + int((active[1:] & ~active[:-1]).sum())
    return total


def memory_scenarios(
    trace: Trace, prices: PriceTable, duration_ms: float, sizes: list[int]
) -> list[Scenario]:
    n = trace.invocations
    out = []
    for size in sizes:
        gbs = n * gb_seconds(size, billed_ms(duration_ms))
        cost = n * prices.per_request + gbs * prices.per_gb_second
        out.append(Scenario(f"{size} MB", n, gbs, cost, None))
    return out


def provisioned_scenarios(
    trace: Trace, prices: PriceTable, duration_ms: float, memory_mb: int, counts: list[int]
) -> list[Scenario]:
    n = trace.invocations
    seconds = trace.minutes * 60
    gbs = n * gb_seconds(memory_mb, billed_ms(duration_ms))
    on_demand = n * prices.per_request + gbs * prices.per_gb_second
    cold = cold_starts_on_demand(trace)
    out = []
    for count in counts:
        held = len(trace.functions) * count * memory_mb / 1024 * seconds
        cost = on_demand + held * prices.per_provisioned_gb_second
        out.append(Scenario(f"{count} provisioned", n, gbs + held, cost, 0 if count else cold))
    return out
