"""A token bucket per key: how often one caller may use an endpoint that must stay bounded.

Each key (an authenticated member, say) holds up to ``burst`` tokens and
gains ``rate`` tokens a second; a request takes one or is refused with
``TooManyRequestsError`` and the whole seconds until a token is back
(``detail["retry_after"]``, which :mod:`core.web` also sends as
``Retry-After``). So over any interval of ``t`` seconds a key is answered
at most ``burst + rate * t`` times, and a caller that keeps to ``rate`` is
never refused.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from core.errors import TooManyRequestsError

__all__ = ["RateLimiter"]

#: Tokens a bucket may be short of one and still answer: a caller keeping exactly to the
#: rate must not be refused over floating-point rounding of the time between its requests.
ROUNDING = 1e-9


class RateLimiter:
    """Token buckets for up to ``max_keys`` keys (the least recently used is forgotten, and
    starts full again if it comes back: keep ``max_keys`` above the number of callers)."""

    def __init__(
        self,
        *,
        rate: float,  # tokens a second
        burst: int,  # tokens a bucket holds
        what: str,  # what is counted, for the refusal's message ("pseudonym lookups")
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._what = what
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, when

    def take(self, key: str) -> None:
        """Spend one of ``key``'s tokens, or raise TooManyRequestsError if it has none."""
        now = self._clock()
        tokens, then = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        allowed = tokens >= 1 - ROUNDING
        # Never below empty: a token spent within ROUNDING of whole must not leave a debt that
        # the next refusal's wait would round up into a needless extra second.
        self._buckets[key] = (max(0.0, tokens - 1) if allowed else tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if not allowed:
            # The same tolerance as the test above: after ``wait`` seconds the caller is answered,
            # a second sooner it would not be.
            wait = max(1, math.ceil((1 - ROUNDING - tokens) / self.rate))
            raise TooManyRequestsError(
                f"too many {self._what}; try again in {wait} s", detail={"retry_after": wait}
            )
