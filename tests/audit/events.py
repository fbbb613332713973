"""Audit events for tests: what a gateway of the test federation records."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid

from audit.events import AuditEvent
from core.canonical import b64url
from core.ids import Cnic
from core.pseudonym import Pseudonymizer
from tests.registry.federation import LMC_TAX, NADRA, PERSON

GATEWAY = NADRA.gateway("gw1")
PSEUDONYM_KEY = b"k" * 32
PSEUDONYMS = Pseudonymizer(PSEUDONYM_KEY)
CITIZEN = Cnic("35202-1234567-1")
OTHER = Cnic("42101-7654321-3")
T0 = dt.datetime(2026, 11, 28, 9, 0, tzinfo=dt.UTC)


def digest(data: bytes) -> str:
    return "sha256:" + b64url(hashlib.sha256(data).digest())


def event(
    n: int, *, subject: Cnic = CITIZEN, denied: bool = False, gateway: object = GATEWAY
) -> AuditEvent:
    """The n-th exchange: LMC's property-tax system reads a person record from NADRA."""
    return AuditEvent.model_validate(
        {
            "event_id": str(uuid.UUID(int=n)),
            "time": T0 + dt.timedelta(seconds=n),
            "gateway": gateway,
            "role": "provider",
            "message_id": f"msg-{n}",
            "request_id": f"req-{n}",
            "client": LMC_TAX,
            "service": PERSON,
            "method": "GET",
            "subject": PSEUDONYMS(subject),
            "purpose": "identity-verification",
            "legal_basis": "consent",
            "consent_id": f"c-{n}",
            "outcome": "denied" if denied else "delivered",
            "error_type": "Server.ServerProxy.ConsentDenied" if denied else None,
            "request_digest": digest(b"request %d" % n),
            "response_digest": None if denied else digest(b"response %d" % n),
            "fields_released": [] if denied else ["/name", "/address"],
        }
    )
