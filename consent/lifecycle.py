"""The consent state machine: which action moves a consent from which state to which.

A consumer's request starts PENDING; the citizen (or a guardian) approves it
(ACTIVE) or rejects it (REJECTED); an active consent can be paused and
resumed, revoked at any time, and expires on its own when its time is up.
REJECTED, REVOKED and EXPIRED are final: nothing leaves them, so a consent
that once stopped permitting can never permit again.

The table below is the whole rule; everything else (the API's 409s, the
database CHECK constraint, the property tests) is derived from it.
"""

from __future__ import annotations

from enum import StrEnum

from core.errors import ConflictError

__all__ = [
    "FINAL",
    "TRANSITIONS",
    "Action",
    "IllegalTransitionError",
    "Status",
    "transition",
]


class Status(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    REJECTED = "REJECTED"
    PAUSED = "PAUSED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class Action(StrEnum):
    """What happened to a consent; ``REQUEST`` creates it, the others move it."""

    REQUEST = "request"
    APPROVE = "approve"
    REJECT = "reject"
    PAUSE = "pause"
    RESUME = "resume"
    REVOKE = "revoke"
    EXPIRE = "expire"


TRANSITIONS: dict[tuple[Status, Action], Status] = {
    (Status.PENDING, Action.APPROVE): Status.ACTIVE,
    (Status.PENDING, Action.REJECT): Status.REJECTED,
    (Status.PENDING, Action.EXPIRE): Status.EXPIRED,
    (Status.ACTIVE, Action.PAUSE): Status.PAUSED,
    (Status.ACTIVE, Action.REVOKE): Status.REVOKED,
    (Status.ACTIVE, Action.EXPIRE): Status.EXPIRED,
    (Status.PAUSED, Action.RESUME): Status.ACTIVE,
    (Status.PAUSED, Action.REVOKE): Status.REVOKED,
    (Status.PAUSED, Action.EXPIRE): Status.EXPIRED,
}

#: States no action leaves.
FINAL: frozenset[Status] = frozenset({Status.REJECTED, Status.REVOKED, Status.EXPIRED})


class IllegalTransitionError(ConflictError):
    """The action does not apply to the consent's current state (HTTP 409)."""


def transition(current: Status, action: Action) -> Status:
    """The state ``action`` leads to from ``current``, or IllegalTransitionError."""
    target = TRANSITIONS.get((current, action))
    if target is None:
        allowed = sorted(a.value for (s, a) in TRANSITIONS if s == current)
        raise IllegalTransitionError(
            f"cannot {action.value} a consent that is {current.value}"
            + (f" (allowed: {', '.join(allowed)})" if allowed else " (it is final)"),
            detail={"status": current.value, "action": action.value, "allowed": allowed},
        )
    return target
