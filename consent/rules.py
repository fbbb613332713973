"""Enforcement decisions: does this consent permit this exchange, and what may it release?

A provider's gateway asks with the consent id from the ``Shahrah-Consent``
header, the data subject, the calling consumer, the service, the purpose
and the time. The answer is a :class:`Permit` with the fields the citizen
agreed to release, or a :class:`ConsentDenied` naming the precise reason.

The checks run in a fixed order: who and what first (subject, consumer,
service, purpose), then the consent's state, then its validity window, then
its use limits, so the reason a gateway logs is the most specific one.
:func:`evaluate` is pure; counting uses is the store's job
(:mod:`consent.service`), because it must be atomic across gateways.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

from consent.artefact import ConsentView
from consent.lifecycle import Status
from core.errors import ConsentDeniedError
from core.ids import ClientId, Cnic, ServiceId

__all__ = [
    "CLOCK_SKEW",
    "ConsentDenied",
    "DecisionQuery",
    "DenyReason",
    "Permit",
    "cache_window",
    "check_counts",
    "evaluate",
    "state_reason",
]

#: How far a gateway's decision time may differ from the consent service's clock.
CLOCK_SKEW = dt.timedelta(seconds=30)


class DenyReason(StrEnum):
    UNKNOWN_CONSENT = "unknown_consent"
    OTHER_SUBJECT = "other_subject"
    OTHER_CONSUMER = "other_consumer"
    SERVICE_NOT_COVERED = "service_not_covered"
    PURPOSE_MISMATCH = "purpose_mismatch"
    PENDING = "pending"
    REJECTED = "rejected"
    PAUSED = "paused"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    USE_LIMIT_REACHED = "use_limit_reached"
    FREQUENCY_EXCEEDED = "frequency_exceeded"
    #: The gateway-side client lost the revocation feed longer than its bound (fail closed).
    FEED_LOST = "feed_lost"
    #: The gateway-side client could not get an answer from the consent service.
    UNAVAILABLE = "unavailable"


_STATE_REASONS = {
    Status.PENDING: DenyReason.PENDING,
    Status.REJECTED: DenyReason.REJECTED,
    Status.PAUSED: DenyReason.PAUSED,
    Status.REVOKED: DenyReason.REVOKED,
    Status.EXPIRED: DenyReason.EXPIRED,
}


class ConsentDenied(ConsentDeniedError):
    """``Server.ServerProxy.ConsentDenied`` with a machine-readable ``reason``."""

    def __init__(self, reason: DenyReason, consent_id: str, message: str) -> None:
        super().__init__(
            f"consent {consent_id} does not permit this exchange: {message}",
            detail={"reason": reason.value, "consent_id": consent_id},
        )
        self.reason = reason
        self.consent_id = consent_id
        self.why = message


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    """What a provider's gateway asks about one exchange."""

    consent_id: str
    subject: Cnic
    consumer: ClientId
    service: ServiceId
    purpose: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class Permit:
    """The consent holds: release only ``released_fields`` (JSON Pointers into the response)."""

    consent_id: str
    released_fields: list[str]
    legal_basis: str
    subject_pseudonym: str
    #: The deciding gateway client's count of consent changes heard when it decided, so it
    #: can tell later whether this consent changed since (consent.client.ConsentClient.confirm).
    generation: int = field(default=0, compare=False)
    #: The deciding client's monotonic time before which every change to any consent is
    #: reflected in this permit or was heard by the client, so ``confirm`` can tell whether a
    #: change still in transit could have been left unsaid by the time the answer leaves.
    as_of: float = field(default=0.0, compare=False)


def state_reason(status: Status) -> DenyReason | None:
    """Why a consent in ``status`` permits nothing, or None if it is ACTIVE."""
    return _STATE_REASONS.get(status)


def evaluate(
    consent: ConsentView, query: DecisionQuery, now: dt.datetime | None = None
) -> list[str]:
    """The fields ``consent`` releases for ``query``, or ConsentDenied with the reason.

    The consent must be in force at the gateway's ``query.at`` and, when given, at ``now``
    (the consent service's own clock): the gateway's time may be off by the allowed skew,
    and a consent that expired by our clock must not be honoured for those extra seconds.
    Use limits are not checked here (see :func:`check_counts`).
    """
    cid = consent.id
    # The service first: a provider learns whose consent it is, and for whom, only when it
    # is a party to it (the caller's member provides the service asked about).
    fields = consent.released(str(query.service))
    if fields is None:
        raise ConsentDenied(
            DenyReason.SERVICE_NOT_COVERED, cid, f"it does not cover {query.service}"
        )
    if consent.subject != query.subject:
        raise ConsentDenied(DenyReason.OTHER_SUBJECT, cid, "it is about another data subject")
    if consent.consumer != query.consumer:
        # Not named: the message reaches the consumer, who may have guessed the id.
        raise ConsentDenied(DenyReason.OTHER_CONSUMER, cid, "it was granted to another client")
    if consent.purpose != query.purpose:
        raise ConsentDenied(
            DenyReason.PURPOSE_MISMATCH,
            cid,
            f"it was granted for purpose {consent.purpose!r}, not {query.purpose!r}",
        )
    reason = state_reason(consent.status)
    if reason is not None:
        raise ConsentDenied(reason, cid, f"it is {consent.status.value}")
    # Fail closed: judge by whichever of the two clocks is less favourable.
    times = (query.at,) if now is None else (query.at, now)
    if min(times) < consent.valid_from:
        raise ConsentDenied(
            DenyReason.NOT_YET_VALID, cid, f"it is valid from {_iso(consent.valid_from)}"
        )
    if max(times) >= consent.expires_at:
        raise ConsentDenied(DenyReason.EXPIRED, cid, f"it expired at {_iso(consent.expires_at)}")
    return fields


def cache_window(
    valid_from: dt.datetime, expires_at: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """``(start, end)``: a cached permit may answer a gateway's query without asking only
    while ``start <= at < end``.

    The service judges a consent's window by its own clock as well as by ``at``
    (:func:`evaluate`), and its clock may be anywhere within CLOCK_SKEW of ``at``. A cached
    permit answers only where every such clock finds the consent in force; nearer the
    window's ends the gateway asks, and the service decides by its own clock.
    """
    return valid_from + CLOCK_SKEW, expires_at - CLOCK_SKEW


def check_counts(consent: ConsentView, uses: int, uses_in_window: int) -> None:
    """Refuse one more use when the total limit or the frequency limit is reached."""
    if consent.use_limit is not None and uses >= consent.use_limit:
        raise ConsentDenied(
            DenyReason.USE_LIMIT_REACHED, consent.id, f"all {consent.use_limit} uses are spent"
        )
    freq = consent.frequency
    if freq is not None and uses_in_window >= freq.max:
        raise ConsentDenied(
            DenyReason.FREQUENCY_EXCEEDED,
            consent.id,
            f"it allows {freq.max} uses per {freq.per.value} and they are spent",
        )


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
