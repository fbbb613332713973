"""Errors of the audit trail that callers outside the package act on."""

from __future__ import annotations

from core.errors import ShahrahError

__all__ = [
    "AuditUnavailableError",
    "TimelineUnavailableError",
    "WitnessConflictError",
    "WitnessError",
    "WitnessRefusedError",
    "WitnessUnavailableError",
]


class AuditUnavailableError(ShahrahError):
    """An audit record could not be made durable. The exchange it records must not
    complete: the gateway fails closed."""

    status = 503
    xroad_type = "Server.AuditLogUnavailable"


class TimelineUnavailableError(ShahrahError):
    """A citizen's timeline cannot be read now: the audit server is unreachable, answered
    unexpectedly, or holds no pseudonym key."""

    status = 503
    xroad_type = "Server.TimelineUnavailable"


class WitnessError(ShahrahError):
    """The witness did not cosign a checkpoint."""

    status = 502
    xroad_type = "Server.AuditWitnessError"


class WitnessUnavailableError(WitnessError):
    """The witness could not be reached or answered unexpectedly; try again later."""


class WitnessRefusedError(WitnessError):
    """The witness examined the submission and refused it (bad signature, bad proof, fork)."""


class WitnessConflictError(WitnessError):
    """The witness holds another tree size for the log than the submission started from."""

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, detail={"size": size})
        self.size = size
