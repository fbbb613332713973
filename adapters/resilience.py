"""Timeouts, retries with exponential backoff and jitter, and a circuit breaker per backend.

One call gets one deadline (``timeout``) that bounds every attempt and every
pause between attempts, so a caller never waits longer than it was told.
Only idempotent reads are tried again, and only after failures that may pass
(:attr:`adapters.errors.BackendFailure.retryable`). Pauses are "full jitter":
a random time up to ``backoff * 2**attempt`` (capped), so callers that failed
together do not come back together.

The breaker counts consecutive failures of the backend (not of the callers:
a 404 or a refused parameter is a success for it). After ``failures`` in a
row it opens and refuses at once for ``reset_after`` seconds, then lets one
trial call through (half-open): success closes it, failure opens it again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters.errors import BackendFailure

__all__ = ["BreakerState", "CircuitBreaker", "Resilience", "call_with_policy"]

T = TypeVar("T")


class Resilience(BaseModel):
    """A backend's resilience settings, as written in the configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout: float = Field(default=10.0, gt=0, le=300)  # seconds for the whole call
    attempt_timeout: float | None = Field(default=None, gt=0, le=300)  # seconds; default: timeout
    retries: int = Field(default=2, ge=0, le=10)  # extra attempts for idempotent reads
    backoff: float = Field(default=0.1, ge=0, le=60)  # seconds: ceiling of the first pause
    backoff_max: float = Field(default=2.0, ge=0, le=300)  # seconds: ceiling of any pause
    breaker_failures: int = Field(default=5, ge=1, le=1000)  # consecutive failures to open
    breaker_reset: float = Field(default=30.0, gt=0, le=3600)  # seconds open before a trial

    @model_validator(mode="after")
    def _attempt_within_call(self) -> Resilience:
        if self.attempt_timeout is not None and self.attempt_timeout > self.timeout:
            raise ValueError("attempt_timeout cannot be longer than timeout")
        return self


class BreakerState(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


@dataclass
class CircuitBreaker:
    """Per-backend breaker; not thread-safe, used from one event loop."""

    failures_to_open: int
    reset_after: float  # seconds
    clock: Callable[[], float] = time.monotonic
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_running: bool = False

    def admit(self) -> None:
        """Let a call through or raise BackendFailure at once."""
        if self.state is BreakerState.OPEN:
            if self.clock() - self.opened_at < self.reset_after:
                raise BackendFailure(
                    "the backend's circuit breaker is open after repeated failures",
                    detail={"circuit": "open", "retry_after": self.reset_after},
                )
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            if self.trial_running:
                raise BackendFailure(
                    "the backend's circuit breaker is half-open and a trial call is running",
                    detail={"circuit": "half-open"},
                )
            self.trial_running = True

    def success(self) -> None:
        self.trial_running = False
        self.failures = 0
        self.state = BreakerState.CLOSED

    def failure(self) -> bool:
        """Count a failure; True when this one opened the circuit."""
        self.trial_running = False
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failures_to_open:
            opened = self.state is not BreakerState.OPEN
            self.state = BreakerState.OPEN
            self.opened_at = self.clock()
            return opened
        return False

    def release(self) -> None:
        """A call ended without telling about the backend (cancelled): free the trial slot."""
        self.trial_running = False


async def call_with_policy(
    attempt: Callable[[], Awaitable[T]],
    *,
    policy: Resilience,
    breaker: CircuitBreaker,
    idempotent: bool,
    on_retry: Callable[[BackendFailure], None] = lambda e: None,
    on_open: Callable[[], None] = lambda: None,
) -> T:
    """Run ``attempt`` under the policy; the last failure is raised with the attempt count."""
    deadline = time.monotonic() + policy.timeout
    per_attempt = policy.attempt_timeout or policy.timeout
    tries = 1 + (policy.retries if idempotent else 0)
    for n in range(tries):
        breaker.admit()
        remaining = deadline - time.monotonic()
        try:
            async with asyncio.timeout(min(per_attempt, remaining)):
                result = await attempt()
        except TimeoutError:
            error = BackendFailure(
                f"the backend did not answer within {min(per_attempt, policy.timeout):g} s",
                detail={"timeout": min(per_attempt, policy.timeout)},
                retryable=True,
            )
        except BackendFailure as e:
            error = e
        except BaseException:
            breaker.release()
            raise
        else:
            breaker.success()
            return result
        if breaker.failure():
            on_open()
        pause = random.uniform(0, min(policy.backoff_max, policy.backoff * 2**n))  # noqa: S311
        last = n == tries - 1
        if last or not error.retryable or time.monotonic() + pause >= deadline:
            if isinstance(error.detail, dict):
                error.detail = {**error.detail, "attempts": n + 1}
            raise error
        on_retry(error)
        await asyncio.sleep(pause)
    raise AssertionError("unreachable: the loop always returns or raises")
