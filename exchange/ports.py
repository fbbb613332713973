"""What the gateway needs from the consent service and the audit log.

The pipeline depends on these small interfaces; the server wires the real
implementations (the consent service's client, the audit writer) behind them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal, Protocol

from core.ids import ClientId, Cnic, GatewayId, ServiceId

__all__ = [
    "AuditSink",
    "ConsentGate",
    "ConsentPermit",
    "ConsentQuery",
    "ExchangeEvent",
]


@dataclass(frozen=True)
class ConsentQuery:
    consent_id: str
    subject: Cnic
    consumer: ClientId
    service: ServiceId
    purpose: str
    at: dt.datetime


@dataclass(frozen=True)
class ConsentPermit:
    consent_id: str
    released_fields: list[str]  # JSON Pointers into the response
    legal_basis: str
    subject_pseudonym: str


class ConsentGate(Protocol):
    async def decide(self, query: ConsentQuery) -> ConsentPermit:
        """Permit with the released fields, or raise ConsentDeniedError with the reason."""
        ...

    async def pseudonym(self, subject: Cnic) -> str:
        """The federation pseudonym of ``subject`` for audit records."""
        ...


@dataclass(frozen=True)
class ExchangeEvent:
    """One exchange as a gateway records it (the fields of the audit trail)."""

    event_id: str
    time: dt.datetime
    gateway: GatewayId
    role: Literal["consumer", "provider"]
    message_id: str
    request_id: str
    client: ClientId | None
    service: ServiceId | None
    outcome: Literal["delivered", "denied"]
    error_type: str | None = None
    status: int | None = None
    subject_pseudonym: str | None = None
    purpose: str | None = None
    legal_basis: str | None = None
    consent_id: str | None = None
    request_sha256: str | None = None
    response_sha256: str | None = None
    request_signature_sha256: str | None = None
    response_signature_sha256: str | None = None
    fields_released: list[str] | None = field(default=None)


class AuditSink(Protocol):
    async def append(self, event: ExchangeEvent) -> None:
        """Return only once the event is durable."""
        ...
