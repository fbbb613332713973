"""What the gateway needs from the consent service and the audit log.

The pipeline depends on these small interfaces; the server wires the real
implementations (the consent service's client, the audit writer) behind them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from audit.events import AuditEvent
from core.ids import ClientId, Cnic, ServiceId

__all__ = [
    "AuditSink",
    "ConsentGate",
    "ConsentPermit",
    "ConsentQuery",
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


class AuditSink(Protocol):
    """The gateway's audit log (audit.writer.AuditWriter)."""

    async def append(self, event: AuditEvent) -> object:
        """Return only once the event is durable; raise if it cannot be made so."""
        ...
