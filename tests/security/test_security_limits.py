"""Token bucket and quota arithmetic, as pure functions of explicit times."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from coldbrew.security.limits import day_window, month_window, quota, take

rates = st.floats(min_value=0.01, max_value=1000, allow_nan=False)
bursts = st.integers(min_value=1, max_value=1000)
gaps = st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=200)


@given(rates, bursts, gaps)
def test_bucket_never_allows_more_than_burst_plus_refill(
    rate: float, burst: int, steps: list[float]
) -> None:
    now, bucket, allowed = 1_000.0, None, 0
    for gap in steps:
        now += gap
        bucket, decision = take(bucket, rate, burst, now)
        allowed += decision.allowed
        assert 0 <= bucket.tokens <= burst
        assert 0 <= decision.remaining <= burst
        if not decision.allowed:
            assert decision.retry_after_s >= 1
            assert decision.code == "RATE_LIMITED"
    assert allowed <= burst + math.floor((now - 1_000.0) * rate) + 1


@given(rates, bursts)
def test_a_full_bucket_allows_exactly_burst_at_one_instant(rate: float, burst: int) -> None:
    bucket, results = None, []
    for _ in range(burst + 1):
        bucket, decision = take(bucket, rate, burst, 50.0)
        results.append(decision.allowed)
    assert results == [True] * burst + [False]


@given(rates, bursts)
def test_retry_after_is_enough(rate: float, burst: int) -> None:
    bucket = None
    for _ in range(burst):
        bucket, _ = take(bucket, rate, burst, 0.0)
    bucket, refused = take(bucket, rate, burst, 0.0)
    assert not refused.allowed
    _, later = take(bucket, rate, burst, float(refused.retry_after_s))
    assert later.allowed


@given(st.integers(0, 10_000), st.integers(0, 10_000), st.floats(0, 4e9, allow_nan=False))
def test_quota_allows_until_the_limit(used: int, limit: int, now: float) -> None:
    _, ends = day_window(now)
    decision = quota(used, limit, now, ends)
    assert decision.allowed == (used < limit)
    assert decision.remaining == (max(0, limit - used - 1) if used < limit else 0)
    assert 1 <= decision.reset_s <= 86_400
    if not decision.allowed:
        assert decision.code == "QUOTA_EXCEEDED" and decision.retry_after_s == decision.reset_s


@given(st.floats(0, 4e9, allow_nan=False))
def test_windows_contain_now_and_end_at_the_next_boundary(now: float) -> None:
    key, ends = day_window(now)
    assert now < ends <= now + 86_400
    assert datetime.fromtimestamp(ends, UTC).hour == 0
    assert key == datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
    mkey, mends = month_window(now)
    assert now < mends <= now + 31 * 86_400
    assert datetime.fromtimestamp(mends, UTC).day == 1
    assert mkey == key[:6]
