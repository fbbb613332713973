"""The token bucket: never more than burst + rate * t answers in t seconds, never a refusal
for a caller that keeps to the rate, and a Retry-After that is honest."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import TooManyRequestsError
from core.ratelimit import RateLimiter

RATES = st.sampled_from([0.5, 1.0, 3.0, 20.0])
BURSTS = st.integers(min_value=1, max_value=20)
GAPS = st.lists(
    st.just(0.0) | st.integers(min_value=0, max_value=3000).map(lambda ms: ms / 1000),
    max_size=150,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _try(limiter: RateLimiter, key: str) -> int | None:
    """None if answered, else the refusal's retry_after."""
    try:
        limiter.take(key)
    except TooManyRequestsError as e:
        refused = e
    else:
        return None
    assert refused.status == 429
    return int(refused.detail["retry_after"])


@given(rate=RATES, burst=BURSTS, gaps=GAPS)
def test_no_key_is_answered_more_than_burst_plus_rate_times_the_interval(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate=rate, burst=burst, what="lookups", clock=clock)
    answered: list[float] = []
    for gap in gaps:
        clock.now += gap
        if _try(limiter, "member") is None:
            answered.append(clock.now)
    for i, start in enumerate(answered):
        for j in range(i, len(answered)):
            assert j - i + 1 <= burst + rate * (answered[j] - start) + 1e-6


@given(rate=RATES, burst=BURSTS, gaps=GAPS)
# Found in CI: a token spent within rounding of whole left a debt of 6e-14, and the next
# refusal said 3 s where 2 were enough.
@example(rate=0.5, burst=1, gaps=[0.0] * 9 + [0.003] * 3 + [0.0, 0.0])
def test_a_refusal_says_when_to_come_back_and_means_it(
    rate: float, burst: int, gaps: list[float]
) -> None:
    clock = Clock()
    limiter = RateLimiter(rate=rate, burst=burst, what="lookups", clock=clock)
    for gap in gaps:
        clock.now += gap
        wait = _try(limiter, "member")
        if wait is not None:
            assert wait >= 1
            clock.now += wait - 1
            if wait > 1:  # not a second longer than needed
                assert _try(limiter, "member") is not None
            clock.now += 1
            assert _try(limiter, "member") is None


@given(rate=RATES, burst=BURSTS, n=st.integers(min_value=1, max_value=100))
def test_a_caller_that_keeps_to_the_rate_is_never_refused(rate: float, burst: int, n: int) -> None:
    clock = Clock()
    limiter = RateLimiter(rate=rate, burst=burst, what="lookups", clock=clock)
    for _ in range(burst):  # spend the burst at once
        assert _try(limiter, "member") is None
    for _ in range(n):
        clock.now += 1 / rate
        assert _try(limiter, "member") is None
    assert _try(limiter, "other") is None  # every key has its own bucket


def test_the_refusal_names_what_is_limited() -> None:
    limiter = RateLimiter(rate=1, burst=1, what="pseudonym lookups", clock=Clock())
    limiter.take("m")
    with pytest.raises(TooManyRequestsError) as caught:
        limiter.take("m")
    assert caught.value.message == "too many pseudonym lookups; try again in 1 s"
    assert caught.value.xroad_type == "Client.TooManyRequests"
