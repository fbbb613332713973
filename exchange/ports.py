"""What the gateway needs from the consent service and the audit log.

The pipeline depends on these small interfaces; the runtime wires the real
implementations (consent.client.ConsentClient, audit.writer.AuditWriter).
"""

from __future__ import annotations

from typing import Protocol

from audit.events import AuditEvent
from consent.client import Pseudonym
from consent.rules import DecisionQuery, Permit
from core.ids import Cnic
from core.keys import PrivateKey

__all__ = ["AuditSink", "ConsentGate"]


class ConsentGate(Protocol):
    """The consent service as a provider's gateway asks it."""

    async def decide(self, query: DecisionQuery) -> Permit:
        """Permit with the released fields, or raise ConsentDeniedError with the reason."""
        ...

    async def confirm(self, permit: Permit) -> None:
        """Raise ConsentDeniedError if the permit's consent may have changed since it was
        given (checked before an answer is released; never counts a use again)."""
        ...

    async def pseudonym(self, subject: Cnic) -> Pseudonym:
        """The federation pseudonym of ``subject`` for audit records, with the consent
        service's signed statement of it."""
        ...

    def known_pseudonym(self, subject: Cnic) -> str | None:
        """The pseudonym of ``subject`` if already known here; asks nobody."""
        ...

    def use_key(self, key: PrivateKey) -> None:
        """Sign questions to the consent service with ``key`` from now on."""
        ...


class AuditSink(Protocol):
    """The gateway's audit log (audit.writer.AuditWriter)."""

    async def append(self, event: AuditEvent) -> object:
        """Return only once the event is durable; raise if it cannot be made so."""
        ...

    def use_key(self, key: PrivateKey) -> None:
        """Sign the log's checkpoints with ``key`` from now on (exchange.rotation)."""
        ...
